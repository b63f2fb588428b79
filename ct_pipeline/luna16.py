"""The LUNA16 tables as one validated candidate table, and the train/validation split by series.

Columns of the candidate table (one row per candidate, patient coordinates in mm):

=================  ==========================================================================
series_uid         str
center_x_mm ...    float, the candidate centre (``center_xyz``)
diameter_mm        float, the annotated diameter; 0.0 for non-nodule candidates
is_nodule          bool, an annotated nodule
has_annotation     bool, row comes from annotations (as opposed to candidates.csv)
is_malignant       pandas "boolean": True/False from the malignancy table, <NA> when unknown
=================  ==========================================================================

Like the book's chapter-14 code, nodules come from the annotations (with malignancy when the
table has it) and non-nodules from the ``class == 0`` rows of ``candidates.csv``; the ``class == 1``
rows are the annotated nodules again, found by the LUNA16 candidate detectors, and are dropped.

Each table is checked here, once, for every command that reads it (training, the catalog,
prepcache, hard negatives, ``ct evaluate``, ``ct diagnose --evaluate``, the recipe): the file and
line of the first bad value are named; an annotated nodule needs a positive diameter; exact
duplicate rows of a nodule table are dropped with one warning (a nodule listed twice would count
twice); findings' probabilities outside [0, 1] are kept (the FROC only ranks them) with one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ct_pipeline.errors import BadDataError
from ct_pipeline.paths import is_series_uid

log = logging.getLogger(__name__)

CANDIDATES_CSV = "candidates.csv"
ANNOTATIONS_CSV = "annotations.csv"
MALIGNANCY_CSV = "annotations_with_malignancy.csv"
CENTER_COLUMNS = ["center_x_mm", "center_y_mm", "center_z_mm"]
TABLE_COLUMNS = ["series_uid", *CENTER_COLUMNS, "diameter_mm", "is_nodule", "has_annotation", "is_malignant"]
# Two tables describe the same nodule when their centres agree this closely (the malignancy
# table was written from annotations.csv, with float round-off).
SAME_NODULE_MM = 0.5


def read_luna_csv(
    path: Path,
    numeric: list[str],
    extra: list[str] = (),
    any_id: bool = False,  # type: ignore[assignment]
) -> pd.DataFrame:
    """Read a LUNA16 CSV, requiring ``seriesuid`` and the ``numeric`` columns to be finite numbers.

    ``seriesuid`` must be a DICOM-style UID (it names files and cache entries), unless
    ``any_id``: then any non-empty ID (the evaluator only compares them; other data sets and
    LUNA16 derivatives use other IDs).

    Raises:
        BadDataError: naming the file and the 1-based line of the first bad row.
    """
    try:
        # Blank lines are kept while reading so that index + 2 is the file's line number.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except FileNotFoundError as err:
        raise BadDataError(f"{path}: file not found") from err
    except pd.errors.EmptyDataError as err:
        raise BadDataError(f"{path}: the file is empty; expected a CSV header and rows") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BadDataError(f"{path}: not a readable CSV file ({str(err).strip().splitlines()[0]})") from err
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the extra leading fields of rows longer than the header into the index.
        raise BadDataError(
            f"{path}:2: {frame.index.nlevels + len(frame.columns)} fields, but the header has "
            f"{len(frame.columns)} ({','.join(map(str, frame.columns))}); give every row one value per column"
        )
    frame.index = frame.index + 2  # the 1-based line number of each row
    frame = frame[(frame != "").any(axis=1)]
    required = ["seriesuid", *numeric, *extra]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise BadDataError(f"{path}: missing column(s) {missing}; expected header {','.join(required)}")
    bad_uid = (frame["seriesuid"].str.strip() == "") if any_id else ~frame["seriesuid"].map(is_series_uid)
    if bad_uid.any():
        row = int(np.flatnonzero(bad_uid.to_numpy())[0])
        raise BadDataError(f"{path}:{frame.index[row]}: {frame['seriesuid'].iloc[row]!r} is not a valid series UID")
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadDataError(
                f"{path}:{frame.index[row]}: {column} = {frame[column].iloc[row]!r} is not a finite number"
            )
        frame[column] = values.astype(np.float64)
    return frame


def _parse_bool(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    text = frame[column].str.strip().str.lower()
    mapping = {"true": True, "1": True, "false": False, "0": False}
    bad = ~text.isin(list(mapping))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadDataError(f"{path}:{frame.index[row]}: {column} = {frame[column].iloc[row]!r} is not True/False")
    return text.map(mapping).astype("boolean")


def read_annotations(path: Path, any_id: bool = False, excluded: bool = False) -> pd.DataFrame:
    """``annotations.csv`` -> frame with series_uid, center_*_mm, diameter_mm (``any_id``: see
    :func:`read_luna_csv`); exact duplicate rows dropped with one warning.

    With ``excluded`` (the challenge's ``annotations_excluded.csv``) a negative diameter is kept:
    it means "no measured size" there.

    Raises:
        BadDataError: a bad value, or a diameter that is not positive (negative: not with ``excluded``).
    """
    frame = read_luna_csv(path, ["coordX", "coordY", "coordZ", "diameter_mm"], any_id=any_id)
    _check_diameters(path, frame, excluded)
    return _drop_duplicates(path, _rename(frame)[["series_uid", *CENTER_COLUMNS, "diameter_mm"]], "nodule")


def read_malignancy(path: Path) -> pd.DataFrame:
    """``annotations_with_malignancy.csv`` -> frame with series_uid, center_*_mm, diameter_mm, is_malignant;
    exact duplicate rows dropped with one warning.

    Raises:
        BadDataError: a bad value, or a diameter that is not positive.
    """
    frame = read_luna_csv(path, ["coordX", "coordY", "coordZ", "diameter_mm"], extra=["mal_bool"])
    _check_diameters(path, frame, excluded=False)
    frame["is_malignant"] = _parse_bool(path, frame, "mal_bool")
    return _drop_duplicates(
        path, _rename(frame)[["series_uid", *CENTER_COLUMNS, "diameter_mm", "is_malignant"]], "nodule"
    )


def read_findings_frame(path: Path) -> pd.DataFrame:
    """A findings CSV (the LUNA16 submission format ``seriesuid,coordX,coordY,coordZ,probability``,
    any non-empty ID) -> frame with those columns; probabilities outside [0, 1] are kept with one warning.

    Raises:
        BadDataError: naming the file and line of the first bad value.
    """
    frame = read_luna_csv(path, ["coordX", "coordY", "coordZ", "probability"], any_id=True)
    probability = frame["probability"].to_numpy(dtype=np.float64)
    outside = np.flatnonzero((probability < 0.0) | (probability > 1.0))
    if len(outside):
        first = int(outside[0])
        log.warning(
            "%s: %d of %d probabilities are outside [0, 1] (line %d: %s); they are used as scores (the FROC only "
            "ranks them), but check that the column holds the findings' probabilities",
            path,
            len(outside),
            len(frame),
            frame.index[first],
            frame["probability"].iloc[first],
        )
    return frame


def _check_diameters(path: Path, frame: pd.DataFrame, excluded: bool) -> None:
    diameter_mm = frame["diameter_mm"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(diameter_mm == 0 if excluded else ~(diameter_mm > 0))
    if len(bad):
        row = int(bad[0])
        raise BadDataError(
            f"{path}:{frame.index[row]}: diameter_mm = {diameter_mm[row]:g} is not a positive size in mm; "
            "an annotated nodule needs its diameter (only annotations_excluded.csv may use -1)"
        )


def _drop_duplicates(path: Path, frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` without rows equal in every (parsed) value to an earlier one, with one warning naming them."""
    row_hash = pd.util.hash_pandas_object(frame, index=False)
    duplicated = row_hash.duplicated(keep="first").to_numpy()
    if not duplicated.any():
        return frame
    lines = frame.index[duplicated]
    same_as = frame.index[(row_hash == row_hash.loc[lines[0]]).to_numpy()][0]
    log.warning(
        "%s: %d duplicate row%s dropped (line %d repeats line %d): each %s counts once",
        path,
        len(lines),
        "s" if len(lines) > 1 else "",
        lines[0],
        same_as,
        what,
    )
    return frame.loc[~duplicated]


def read_candidates(path: Path) -> pd.DataFrame:
    """``candidates.csv`` -> frame with series_uid, center_*_mm, is_nodule."""
    frame = read_luna_csv(path, ["coordX", "coordY", "coordZ", "class"])
    if not frame["class"].isin([0.0, 1.0]).all():
        row = int(np.flatnonzero(~frame["class"].isin([0.0, 1.0]).to_numpy())[0])
        raise BadDataError(f"{path}:{frame.index[row]}: class = {frame['class'].iloc[row]} must be 0 or 1")
    frame = _rename(frame)
    frame["is_nodule"] = frame["class"] == 1.0
    return _drop_duplicates(path, frame[["series_uid", *CENTER_COLUMNS, "is_nodule"]], "candidate")


def _rename(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(
        columns={"seriesuid": "series_uid", "coordX": "center_x_mm", "coordY": "center_y_mm", "coordZ": "center_z_mm"}
    )


def attach_malignancy(annotations: pd.DataFrame, malignancy: pd.DataFrame) -> pd.Series:
    """For each annotation, ``is_malignant`` of the malignancy-table row within SAME_NODULE_MM, else <NA>."""
    result = pd.Series(pd.NA, index=annotations.index, dtype="boolean")
    by_series = {uid: group for uid, group in malignancy.groupby("series_uid", sort=False)}
    for uid, group in annotations.groupby("series_uid", sort=False):
        table = by_series.get(uid)
        if table is None:
            continue
        distance = np.linalg.norm(
            group[CENTER_COLUMNS].to_numpy()[:, None, :] - table[CENTER_COLUMNS].to_numpy()[None, :, :], axis=2
        )
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(group)), nearest] < SAME_NODULE_MM
        values = table["is_malignant"].to_numpy()[nearest]
        result.loc[group.index[close]] = values[close]
    return result


@dataclass(frozen=True)
class Luna16Tables:
    """Where the LUNA16 CSVs are. Any may be None; at least one must exist."""

    candidates: Path | None
    annotations: Path | None
    malignancy: Path | None

    @classmethod
    def found_in(cls, root: Path) -> Luna16Tables | None:
        """The CSVs directly in ``root`` (the LUNA16 layout), whichever exist; None when none does."""
        found = {
            name: (root / name if (root / name).is_file() else None)
            for name in (CANDIDATES_CSV, ANNOTATIONS_CSV, MALIGNANCY_CSV)
        }
        if not any(found.values()):
            return None
        return cls(found[CANDIDATES_CSV], found[ANNOTATIONS_CSV], found[MALIGNANCY_CSV])

    @classmethod
    def in_folder(cls, root: Path) -> Luna16Tables:
        """The CSVs directly in ``root`` (the LUNA16 layout), whichever exist."""
        tables = cls.found_in(root)
        if tables is None:
            raise BadDataError(
                f"{root}: none of {CANDIDATES_CSV}, {ANNOTATIONS_CSV}, {MALIGNANCY_CSV} found; "
                "a LUNA16 data root keeps them next to its subset* folders"
            )
        return tables


def build_candidate_table(tables: Luna16Tables) -> pd.DataFrame:
    """Annotated nodules (with malignancy when known) plus the non-nodule candidates, sorted.

    Sorted by series, then nodules first by diameter descending, like the book, so that
    any slicing of it is deterministic.
    """
    parts = []
    if tables.annotations is not None:
        nodules = read_annotations(tables.annotations)
        if tables.malignancy is not None:
            nodules["is_malignant"] = attach_malignancy(nodules, read_malignancy(tables.malignancy))
        else:
            nodules["is_malignant"] = pd.Series(pd.NA, index=nodules.index, dtype="boolean")
        parts.append(nodules)
    elif tables.malignancy is not None:
        parts.append(read_malignancy(tables.malignancy))
    for part in parts:
        part["is_nodule"] = True
        part["has_annotation"] = True
    if tables.candidates is not None:
        candidates = read_candidates(tables.candidates)
        non_nodules = candidates.loc[~candidates["is_nodule"]].copy()
        non_nodules["diameter_mm"] = 0.0
        non_nodules["has_annotation"] = False
        non_nodules["is_malignant"] = pd.Series(pd.NA, index=non_nodules.index, dtype="boolean")
        parts.append(non_nodules)
    table = pd.concat([p[TABLE_COLUMNS] for p in parts], ignore_index=True)
    table["is_malignant"] = table["is_malignant"].astype("boolean")
    return sort_candidate_table(table)


def sort_candidate_table(table: pd.DataFrame) -> pd.DataFrame:
    """By series, then nodules first by diameter descending, then centre: one order for any input order."""
    table = table.sort_values(
        ["series_uid", "is_nodule", "diameter_mm", *CENTER_COLUMNS],
        ascending=[True, False, False, True, True, True],
        kind="stable",
    )
    return table.reset_index(drop=True)


def split_series(series_uids, val_stride: int = 10) -> tuple[list[str], list[str]]:
    """Deterministic split by series: of the sorted UIDs, every ``val_stride``-th is validation.

    Returns:
        (train_uids, val_uids); no series is on both sides, and with at least 2 series both
        sides are non-empty.
    """
    if val_stride < 2:
        raise ValueError(f"val_stride must be >= 2, got {val_stride}")
    uids = sorted(set(series_uids))
    val = [uid for i, uid in enumerate(uids) if i % val_stride == 0]
    train = [uid for i, uid in enumerate(uids) if i % val_stride != 0]
    return train, val
