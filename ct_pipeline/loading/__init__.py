"""Reading CT volumes: ``load_ct(source)`` for a series UID, a DICOM folder or an image file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.errors import BadInputError, NotFoundError
from ct_pipeline.loading.dicom import DicomSeries, discover_series, load_dicom_series, order_slices
from ct_pipeline.loading.image_file import load_image_file
from ct_pipeline.loading.mhd import load_mhd, mhd_data_files, mhd_spacing_xyz
from ct_pipeline.loading.series_index import SeriesEntry, dicom_entry, file_entry, find_series
from ct_pipeline.pacs.server import DicomwebServer
from ct_pipeline.paths import resolve_cache_dir, validate_series_uid
from ct_pipeline.volume import CtVolume

__all__ = ["LoadOptions", "load_ct", "load_entry", "find_entry", "entry_files", "entry_spacing_xyz", "CtVolume"]


@dataclass(frozen=True)
class LoadOptions:
    """How to read a series.

    Attributes:
        allow_uneven_spacing: resample DICOM series with missing slices or uneven gaps onto a
            regular grid (with a warning) instead of refusing them.
        series_uid: which series to read when a folder holds several.
        dicomweb: where to look for a series UID that is not under the data roots (fetched once
            into the cache folder, then read like any DICOM folder); None: nowhere.
    """

    allow_uneven_spacing: bool = False
    series_uid: str | None = None
    dicomweb: DicomwebServer | None = None


def _dicom_folder_entry(folder: Path, options: LoadOptions) -> SeriesEntry:
    series = discover_series(folder)
    if not series:
        raise BadInputError(f"{folder}: no DICOM files found in this folder or below it")
    if options.series_uid is not None:
        chosen = [s for s in series if s.series_uid == options.series_uid]
        if not chosen:
            raise NotFoundError(f"series {options.series_uid} is not in {folder}; it holds {_describe(series)}")
        return dicom_entry(chosen[0])
    if len(series) > 1:
        raise BadInputError(f"{folder} holds {len(series)} series ({_describe(series)}); name one with --series UID")
    return dicom_entry(series[0])


def _describe(series: Sequence[DicomSeries]) -> str:
    return "; ".join(f"{s.series_uid} ({s.modality or '?'}, {s.n_files} files)" for s in series)


def find_entry(
    source: str | os.PathLike,
    *,
    data_roots: Sequence[Path] = (),
    cache_dir: Path | None = None,
    options: LoadOptions = LoadOptions(),
) -> SeriesEntry:
    """Which series ``source`` (DICOM folder or file, .mhd, NRRD/NIfTI file, or a series UID under
    ``data_roots``) stands for, found without reading pixels.

    Raises:
        BadInputError / NotFoundError / BadDataError with a one-line message.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return _dicom_folder_entry(path, options)
    if path.is_file():
        entry = file_entry(path)
        if entry is not None:
            return entry
        # A single DICOM file stands for its series in the same folder.
        series = [s for s in discover_series(path.parent) if any(h.path == str(path) for h in s.headers)]
        if series:
            return dicom_entry(series[0])
        raise BadInputError(f"{path}: not a CT image (expected a DICOM file or folder, .mhd, .nrrd, .nii or .nii.gz)")
    uid = validate_series_uid(text)
    if options.dicomweb is None:
        return find_series(uid, data_roots, cache_dir)
    if data_roots:
        try:
            return find_series(uid, data_roots, cache_dir)
        except NotFoundError:
            pass  # not on disk: the server's copy
    from ct_pipeline.pacs.fetch import fetch_series

    folder = fetch_series(options.dicomweb, uid, cache_dir if cache_dir is not None else resolve_cache_dir())
    return _dicom_folder_entry(folder, dataclasses.replace(options, series_uid=uid))


def load_ct(
    source: str | os.PathLike,
    *,
    data_roots: Sequence[Path] = (),
    cache_dir: Path | None = None,
    options: LoadOptions = LoadOptions(),
) -> CtVolume:
    """Load a CT from a path (DICOM folder, .mhd, NRRD/NIfTI file) or a series UID under ``data_roots``
    (or, failing that, on ``options.dicomweb``).

    Returns:
        The volume, HU as int16 in (index, row, col) order.
    Raises:
        BadInputError / NotFoundError / BadDataError with a one-line message.
    """
    return load_entry(find_entry(source, data_roots=data_roots, cache_dir=cache_dir, options=options), options)


def load_entry(entry: SeriesEntry, options: LoadOptions = LoadOptions()) -> CtVolume:
    """Load a :class:`~ct_pipeline.loading.series_index.SeriesEntry` found by the series index."""
    if entry.format == "mhd":
        return load_mhd(Path(entry.path), series_uid=entry.series_uid)
    if entry.format == "dicom":
        return load_dicom_series(entry.dicom, options.allow_uneven_spacing)
    return load_image_file(Path(entry.path))


def entry_spacing_xyz(entry: SeriesEntry) -> tuple[float, float, float]:
    """The voxel spacing (x, y, z) in mm that :func:`load_entry` would give, read from headers only.

    Raises:
        BadDataError: the headers are unreadable or inconsistent (as loading would say).
    """
    if entry.format == "mhd":
        return mhd_spacing_xyz(Path(entry.path))
    if entry.format == "dicom" and entry.dicom is not None:
        return order_slices(entry.dicom, allow_uneven_spacing=True).geometry.spacing_xyz
    return load_image_file(Path(entry.path)).geometry.spacing_xyz  # NRRD/NIfTI: rare in training data


def entry_files(entry: SeriesEntry) -> tuple[str, ...]:
    """Every file :func:`load_entry` reads for ``entry``, in the order of the volume's ``source_files``.

    An .mhd with whatever its ``ElementDataFile`` names; a DICOM series' slices wherever they lie.
    """
    if entry.format == "mhd":
        return tuple(str(p) for p in mhd_data_files(Path(entry.path)))
    if entry.format == "dicom" and entry.dicom is not None:
        return entry.dicom.files
    return (entry.path,)
