"""Finding CT series under data roots.

A data root may hold the LUNA16 layout (``subset*/<uid>.mhd``), DICOM folders in any nesting,
or both. Walking the folders is cheap; reading DICOM headers is not, so each file's header is
remembered in the cache, keyed by path, size and mtime: a changed file is read again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.errors import BadDataError, BadInputError, NotFoundError
from ct_pipeline.loading.dicom import DicomSeries, DicomSliceHeader, discover_series, read_slice_header
from ct_pipeline.loading.image_file import image_format, image_stem
from ct_pipeline.loading.walk import walk_files
from ct_pipeline.pacs.server import DicomwebServer

log = logging.getLogger(__name__)

HEADER_CACHE_VERSION = 3  # 2: headers carry the StudyDate; 3: and the PatientID


@dataclass(frozen=True)
class SeriesEntry:
    """One series found under a data root.

    Attributes:
        series_uid: the series UID (for .mhd and image files: the file name without suffix).
        format: "mhd", "dicom", "nrrd", "nifti", "mha".
        path: the .mhd/image file, or the (first) folder holding the DICOM files.
        n_files: files that make up the series.
        modality: from DICOM headers; "CT" assumed for other formats.
        dicom: the grouped headers, for DICOM series.
    """

    series_uid: str
    format: str
    path: str
    n_files: int
    modality: str = "CT"
    dicom: DicomSeries | None = None

    def summary(self) -> dict:
        return {
            "series_uid": self.series_uid,
            "format": self.format,
            "path": self.path,
            "n_files": self.n_files,
            "modality": self.modality,
        }


class CachedHeaderReader:
    """Reads DICOM headers through a diskcache keyed by (path, size, mtime)."""

    def __init__(self, cache_dir: Path | None):
        self._cache = None
        if cache_dir is not None:
            import diskcache

            self._cache = diskcache.Cache(str(cache_dir / "series_index"), size_limit=2**30)

    def __call__(self, path: Path) -> DicomSliceHeader:
        if self._cache is None:
            return read_slice_header(path)
        stat = path.stat()
        key = f"dicom-header:v{HEADER_CACHE_VERSION}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        cached = self._cache.get(key)
        if isinstance(cached, DicomSliceHeader):
            return cached
        header = read_slice_header(path)
        self._cache.set(key, header, retry=True)
        return header

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def file_entry(path: Path) -> SeriesEntry | None:
    """The series an .mhd (with its data file: 2 files) or an image file stands for; None for other files."""
    if path.name.lower().endswith(".mhd"):
        return SeriesEntry(path.stem, "mhd", str(path), 2)
    fmt = image_format(path)
    return None if fmt is None else SeriesEntry(image_stem(path), fmt, str(path), 1)


def dicom_entry(series: DicomSeries) -> SeriesEntry:
    """The entry of a grouped DICOM series: its first folder stands for it."""
    return SeriesEntry(series.series_uid, "dicom", series.folders[0], series.n_files, series.modality, series)


def scan_roots(roots: Sequence[Path], cache_dir: Path | None = None) -> dict[str, SeriesEntry]:
    """Every series under ``roots``, by series UID.

    The same UID found twice (a LUNA16 .mhd and its DICOM, say) keeps the first root's copy,
    with a warning, so results never depend on directory listing order.
    """
    reader = CachedHeaderReader(cache_dir)
    entries: dict[str, SeriesEntry] = {}
    unreadable: list[Path] = []
    try:
        for root in roots:
            for path in walk_files(root):
                entry = file_entry(path)
                if entry is not None:
                    _add(entries, entry)
            for series in discover_series(root, read_header=reader, unreadable=unreadable):
                _add(entries, dicom_entry(series))
    finally:
        reader.close()
    if unreadable:
        named = ", ".join(str(p) for p in unreadable[:3]) + (
            f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        )
        log.warning(
            "skipped %d unreadable DICOM file%s (corrupt, truncated or not DICOM): %s; a series they belonged to "
            "may lack slices (`ct info` on their folder says why)",
            len(unreadable),
            "" if len(unreadable) == 1 else "s",
            named,
        )
    return entries


def _add(entries: dict[str, SeriesEntry], entry: SeriesEntry) -> None:
    if entry.series_uid in entries:
        log.warning(
            "series %s found twice (%s and %s); using the first",
            entry.series_uid,
            entries[entry.series_uid].path,
            entry.path,
        )
        return
    entries[entry.series_uid] = entry


def find_series(series_uid: str, roots: Sequence[Path], cache_dir: Path | None = None) -> SeriesEntry:
    """The entry for ``series_uid`` (already validated) under ``roots``."""
    if not roots:
        raise NotFoundError(f"series {series_uid}: no data roots to search; pass --data-root DIR or set CT_DATA_ROOT")
    # LUNA16 layout first: a direct look-up avoids reading any DICOM header.
    for root in roots:
        for candidate in sorted(root.glob(f"*/{series_uid}.mhd")) + sorted(root.glob(f"{series_uid}.mhd")):
            return SeriesEntry(series_uid, "mhd", str(candidate), 2)
    entries = scan_roots(roots, cache_dir)
    if series_uid not in entries:
        where = ", ".join(str(r) for r in roots)
        raise NotFoundError(f"series {series_uid} not found under {where}; try `ct series list`")
    return entries[series_uid]


def list_series_everywhere(
    roots: Sequence[Path], cache_dir: Path | None = None, dicomweb: DicomwebServer | None = None
) -> list[SeriesEntry]:
    """Every series under ``roots`` and, with ``dicomweb``, every CT series on that server not on disk
    (format "dicomweb", path the server's URL; nothing is downloaded).

    Raises:
        BadInputError: neither data roots nor a server; BadDataError: no series anywhere.
    """
    if not roots and dicomweb is None:
        raise BadInputError("no data roots: pass --data-root DIR or set CT_DATA_ROOT")
    entries = scan_roots(roots, cache_dir) if roots else {}
    if dicomweb is not None:
        from ct_pipeline.pacs.fetch import list_series

        for remote in list_series(dicomweb):
            if remote.series_uid not in entries:
                entries[remote.series_uid] = SeriesEntry(
                    remote.series_uid, "dicomweb", dicomweb.url, remote.n_instances, remote.modality
                )
    if not entries and dicomweb is not None:
        where = ", ".join([*(str(r) for r in roots), dicomweb.url])
        raise BadDataError(f"no CT series under {where}")
    require_some_series(entries, roots)
    return list(entries.values())


def require_some_series(entries: dict[str, SeriesEntry], roots: Sequence[Path]) -> None:
    if not entries:
        where = ", ".join(str(r) for r in roots)
        raise BadDataError(
            f"no CT series under {where}: expected subset*/<uid>.mhd files (LUNA16), DICOM folders or image files"
        )
