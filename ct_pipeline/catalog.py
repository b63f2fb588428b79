"""The catalog: which series are on disk under the data roots, with their LUNA16 candidates."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.loading.series_index import SeriesEntry, require_some_series, scan_roots
from ct_pipeline.luna16 import (
    TABLE_COLUMNS,
    Luna16Tables,
    build_candidate_table,
    read_candidates,
    sort_candidate_table,
    split_series,
)
from ct_pipeline.pacs.server import DicomwebServer
from ct_pipeline.paths import validate_series_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Series found on disk and the candidate table restricted to them.

    Attributes:
        roots: the data roots searched.
        entries: series UID -> where it is.
        candidates: the LUNA16 candidate table (see :mod:`ct_pipeline.luna16`) of series on disk,
            plus a bool column ``is_own``: the row is one of the pipeline's own candidates
            (``own_candidates`` of :func:`open_catalog`), labelled by ``is_nodule``.
        excluded: series left out of every split (unreadable ones, ``--exclude-series``); the
            split itself is made with them, so leaving a series out moves no other one.
    """

    roots: tuple[Path, ...]
    entries: dict[str, SeriesEntry]
    candidates: pd.DataFrame
    excluded: frozenset[str] = frozenset()

    def excluding(self, series_uids: Sequence[str]) -> Catalog:
        """This catalog with ``series_uids`` left out of :meth:`select`'s splits."""
        return dataclasses.replace(self, excluded=self.excluded | frozenset(series_uids))

    @property
    def series_uids(self) -> list[str]:
        """Series on disk that have candidates, sorted."""
        return sorted(set(self.candidates["series_uid"]))

    def split(self, val_stride: int = 10) -> tuple[list[str], list[str]]:
        return split_series(self.series_uids, val_stride)

    def select(self, split: str = "all", val_stride: int = 10, series: Sequence[str] = ()) -> list[str]:
        """Series UIDs of ``split`` ("all", "train", "val"), or exactly ``series`` when given."""
        if series:
            for uid in series:
                validate_series_uid(uid)  # a malformed UID is named as such, not as "not found"
            unknown = [uid for uid in series if uid not in self.entries]
            if unknown:
                raise BadInputError(f"series {unknown[0]} not found under the data roots; try `ct series list`")
            return sorted(series)
        if split == "all":
            return [uid for uid in self.series_uids if uid not in self.excluded]
        train, val = self.split(val_stride)
        if split == "train":
            return [uid for uid in train if uid not in self.excluded]
        if split == "val":
            return [uid for uid in val if uid not in self.excluded]
        raise BadInputError(f"split {split!r} is not one of all, train, val")

    def candidates_of(self, series_uid: str) -> pd.DataFrame:
        return self.candidates[self.candidates["series_uid"] == series_uid]


def open_catalog(
    roots: Sequence[Path],
    cache_dir: Path | None = None,
    extra_candidates: Sequence[Path] = (),
    dicomweb: DicomwebServer | None = None,
    remote_series: Sequence[str] = (),
    own_candidates: Sequence[Path] = (),
) -> Catalog:
    """Scan ``roots`` for series and LUNA16 CSVs and join them.

    The CSVs are read from every root that has them (LUNA16 keeps them beside ``subset*/``).
    ``extra_candidates`` are more files in ``candidates.csv``'s format (e.g. the hard negatives of
    ``ct hard-negatives``); their non-nodule rows join the table. ``own_candidates`` (the same
    format, ``ct hard-negatives --with-positives``) join it with both classes and ``is_own`` set:
    the classifier draws them as a pool of their own. ``remote_series`` not found under
    ``roots`` are fetched from ``dicomweb`` into the cache folder (see :mod:`ct_pipeline.pacs.fetch`)
    and join the catalog as DICOM folders.
    """
    if not roots:
        raise BadInputError("no data roots: pass --data-root DIR or set CT_DATA_ROOT")
    entries = scan_roots(roots, cache_dir)
    if dicomweb is not None:
        entries.update(_fetched_entries(dicomweb, [uid for uid in remote_series if uid not in entries], cache_dir))
    require_some_series(entries, roots)
    tables = []
    for root in roots:
        found = Luna16Tables.found_in(root)
        if found is not None:
            tables.append(build_candidate_table(found))
    for path in extra_candidates:
        if not Path(path).is_file():
            raise BadInputError(f"--extra-candidates {path}: no such file")
        tables.append(build_candidate_table(Luna16Tables(candidates=Path(path), annotations=None, malignancy=None)))
    if not tables:  # the own candidates alone are no training data: they need the annotations beside them
        where = ", ".join(str(r) for r in roots)
        raise BadDataError(
            f"no candidates.csv or annotations.csv under {where}; training needs the LUNA16 tables "
            "(`ct synth` writes them for synthetic data)"
        )
    for table in tables:
        table["is_own"] = False
    tables += [_own_rows(Path(path)) for path in own_candidates]
    table = sort_candidate_table(pd.concat(tables, ignore_index=True))
    missing = sorted(set(table["series_uid"]) - set(entries))
    if missing:
        log.info("%d series in the tables are not on disk; their candidates are left out", len(missing))
    table = table[table["series_uid"].isin(entries)].reset_index(drop=True)
    return Catalog(tuple(roots), entries, table)


def _own_rows(path: Path) -> pd.DataFrame:
    """A ``candidates.csv``-format file as candidate-table rows of both classes, ``is_own`` set."""
    if not path.is_file():
        raise BadInputError(f"--own-candidates {path}: no such file")
    rows = read_candidates(path)
    rows["diameter_mm"] = 0.0  # a mined candidate has no annotated size
    rows["has_annotation"] = False
    rows["is_malignant"] = pd.Series(pd.NA, index=rows.index, dtype="boolean")
    rows = rows[TABLE_COLUMNS].copy()
    rows["is_own"] = True
    return rows


def _fetched_entries(
    server: DicomwebServer, series_uids: Sequence[str], cache_dir: Path | None
) -> dict[str, SeriesEntry]:
    from ct_pipeline.loading import LoadOptions, find_entry

    options = LoadOptions(dicomweb=server)
    return {uid: find_entry(validate_series_uid(uid), cache_dir=cache_dir, options=options) for uid in series_uids}
