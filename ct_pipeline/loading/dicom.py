"""DICOM series: discovery by SeriesInstanceUID, geometry checks, and reading through GDCM.

What the libraries do silently, and why this module checks it itself:
- ``GetGDCMSeriesFileNames`` without a series ID returns only the first series of a folder;
  here every file's header is read and grouped by SeriesInstanceUID, across folders.
- ITK only warns about missing slices or uneven spacing and returns a volume on a uniform grid
  with wrong geometry; here slice positions along the slice normal are checked first.
- A DICOM object without pixel data (SR, a SEG or presentation state) fails ITK's header read
  like a corrupt file; its modality and series are read from the bytes instead, so its series
  is refused as "not CT" rather than reported as corrupt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.dicom_tags import MODALITY, SERIES_INSTANCE_UID, read_top_level_tags
from ct_pipeline.loading.limits import check_finite, check_fits_in_memory
from ct_pipeline.loading.walk import walk_files
from ct_pipeline.volume import CtVolume

log = logging.getLogger(__name__)

_TAGS = {
    "series_uid": "0020|000e",
    "modality": "0008|0060",
    "position": "0020|0032",
    "orientation": "0020|0037",
    "pixel_spacing": "0028|0030",
    "rows": "0028|0010",
    "columns": "0028|0011",
    "instance": "0020|0013",
    "description": "0008|103e",
    "manufacturer": "0008|0070",
    "kernel": "0018|1210",
    "study_date": "0008|0020",
    "patient_id": "0010|0020",
}
# Relative tolerance on slice gaps: scanners write positions with ~1e-3 mm rounding.
SPACING_TOLERANCE = 0.01
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSliceHeader:
    """The header fields of one DICOM file that ordering and checks need."""

    path: str
    series_uid: str
    modality: str
    position_xyz: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None  # 6 direction cosines: row direction, column direction
    pixel_spacing_rc: tuple[float, float] | None  # (between rows = y, between columns = x), mm
    rows: int
    columns: int
    instance: int | None
    description: str = ""
    manufacturer: str = ""
    kernel: str = ""
    study_date: str = ""  # YYYYMMDD, for the interval between two scans (ct compare)
    patient_id: str = ""  # ct compare warns when two scans' differ


def has_dicom_magic(path: Path) -> bool:
    """True for files with the DICOM preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _floats(text: str) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split("\\") if v != "")
    except ValueError:
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def _whole(text: str) -> int | None:
    """An IS/US value, or None when absent or garbled (a damaged byte in a number is not a crash)."""
    values = _floats(text)
    return int(values[0]) if values and len(values) == 1 else None


def read_slice_header(path: Path) -> DicomSliceHeader:
    """Read one file's header (no pixels). Raises BadDataError naming the file if unreadable."""
    try:
        path.stat()  # a broken or looping link: say so, not ITK's "corrupt"
    except OSError as err:
        raise _unreadable_file(path, err) from err
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        header = _non_image_header(path)
        if header is not None:
            return header
        raise BadDataError(f"{path}: unreadable DICOM file (corrupt or truncated); remove or replace it") from err

    def tag(name: str) -> str:
        key = _TAGS[name]
        if not reader.HasMetaDataKey(key):
            return ""
        # A damaged value arrives with lone surrogates for its non-UTF-8 bytes, which no console or
        # file can encode, and may hold control characters (\x1e, \x85) that end a line in the
        # one-line messages naming it: U+FFFD in their place keeps it printable (and still distinct).
        text = reader.GetMetaData(key).encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
        return "".join(c if c.isprintable() else "\ufffd" for c in text)

    position = _floats(tag("position"))
    orientation = _floats(tag("orientation"))
    spacing = _floats(tag("pixel_spacing"))
    return DicomSliceHeader(
        path=str(path),
        series_uid=tag("series_uid"),
        modality=tag("modality").upper(),
        position_xyz=position if position and len(position) == 3 else None,  # type: ignore[arg-type]
        orientation=orientation if orientation and len(orientation) == 6 else None,
        pixel_spacing_rc=spacing if spacing and len(spacing) == 2 else None,  # type: ignore[arg-type]
        rows=_whole(tag("rows")) or 0,
        columns=_whole(tag("columns")) or 0,
        instance=_whole(tag("instance")),
        description=tag("description"),
        manufacturer=tag("manufacturer"),
        kernel=tag("kernel"),
        study_date=tag("study_date"),
        patient_id=tag("patient_id"),
    )


def _unreadable_file(path: Path, err: OSError) -> BadDataError:
    return BadDataError(f"{path}: cannot read this DICOM file ({err.strerror}); remove or replace it")


def _non_image_header(path: Path) -> DicomSliceHeader | None:
    """The header of a DICOM object that GDCM does not open as an image (SR, SEG, ...), or None.

    Only a file naming its series and a modality other than CT gets one, so that its series is
    refused for its modality; a CT file whose header does not read is corrupt.
    """
    tags = read_top_level_tags(path, (MODALITY, SERIES_INSTANCE_UID))
    modality, series_uid = tags.get(MODALITY, "").upper(), tags.get(SERIES_INSTANCE_UID, "")
    if not series_uid or not modality or modality == "CT":
        return None
    log.debug("%s: not an image GDCM reads; modality %s, series %s", path, modality, series_uid)
    return DicomSliceHeader(
        path=str(path),
        series_uid=series_uid,
        modality=modality,
        position_xyz=None,
        orientation=None,
        pixel_spacing_rc=None,
        rows=0,
        columns=0,
        instance=None,
    )


def iter_dicom_files(folder: Path) -> Iterable[Path]:
    """Every file below ``folder`` that looks like DICOM (preamble, or a .dcm name); folder links
    are followed, each folder once (:func:`~ct_pipeline.loading.walk.walk_files`)."""
    for path in walk_files(folder):
        if path.name.upper() == "DICOMDIR":
            continue
        if path.name.lower().endswith(".dcm") or has_dicom_magic(path):
            yield path


@dataclass(frozen=True)
class DicomSeries:
    """All files of one SeriesInstanceUID, as found on disk (not yet checked)."""

    series_uid: str
    modality: str
    headers: tuple[DicomSliceHeader, ...]

    @property
    def n_files(self) -> int:
        return len(self.headers)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the series, by path (the order its source fingerprint covers them in)."""
        return tuple(h.path for h in self.headers)

    @property
    def folders(self) -> tuple[str, ...]:
        return tuple(sorted({str(Path(h.path).parent) for h in self.headers}))


HeaderReader = Callable[[Path], DicomSliceHeader]


def discover_series(
    folder: Path, read_header: HeaderReader = read_slice_header, unreadable: list[Path] | None = None
) -> list[DicomSeries]:
    """Group every DICOM file below ``folder`` by SeriesInstanceUID.

    ``read_header`` lets the series index plug in its cached reader. An unreadable file raises,
    so a series is never silently read without one of its slices; unless ``unreadable`` is
    given (the index of a whole data root): then such files are appended to it and skipped,
    so one damaged file does not hide every other series.
    """
    groups: dict[str, list[DicomSliceHeader]] = {}
    for path in iter_dicom_files(folder):
        try:
            header = read_header(path)
        except (BadDataError, OSError) as err:
            # OSError: a broken or looping link, or a file gone or locked since the walk.
            if unreadable is None:
                if isinstance(err, OSError):
                    raise _unreadable_file(path, err) from err
                raise
            unreadable.append(path)
            continue
        if not header.series_uid:
            raise BadDataError(f"{path}: DICOM file without a SeriesInstanceUID (0020,000E)")
        groups.setdefault(header.series_uid, []).append(header)
    return [
        DicomSeries(uid, headers[0].modality, tuple(sorted(headers, key=lambda h: h.path)))
        for uid, headers in sorted(groups.items())
    ]


@dataclass(frozen=True)
class SliceStack:
    """A checked series: files ordered along the slice normal and the grid they form."""

    files: tuple[str, ...]
    positions_mm: np.ndarray  # position of each slice along the normal, ascending
    geometry: Geometry
    uneven: bool


def order_slices(series: DicomSeries, allow_uneven_spacing: bool = False) -> SliceStack:
    """Order a series' slices along their normal and check it forms one regular 3D grid."""
    uid = series.series_uid
    if series.modality != "CT":
        raise BadDataError(f"series {uid} is modality {series.modality or 'unknown'}, not CT; ct reads CT series only")
    headers = series.headers
    for h in headers:
        if h.position_xyz is None or h.orientation is None or h.pixel_spacing_rc is None:
            raise BadDataError(
                f"{h.path}: missing ImagePositionPatient, ImageOrientationPatient or PixelSpacing; "
                "cannot place this slice in 3D"
            )
    orientations = np.array([h.orientation for h in headers], dtype=np.float64)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        odd = headers[int(np.argmax(np.abs(orientations - orientations[0]).max(axis=1)))]
        raise BadDataError(
            f"series {uid} mixes slice orientations ({odd.path} differs from {headers[0].path}); "
            "it is not one 3D volume"
        )
    sizes = {(h.rows, h.columns) for h in headers}
    if len(sizes) > 1:
        raise BadDataError(f"series {uid} mixes slice sizes {sorted(sizes)}; it is not one 3D volume")
    spacings = {h.pixel_spacing_rc for h in headers}
    if len(spacings) > 1:
        raise BadDataError(f"series {uid} mixes pixel spacings {sorted(spacings)}; it is not one 3D volume")

    row_dir = orientations[0, :3]
    col_dir = orientations[0, 3:]
    normal = np.cross(row_dir, col_dir)
    positions_xyz = np.array([h.position_xyz for h in headers], dtype=np.float64)
    along = positions_xyz @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions_xyz = positions_xyz[order]
    files = tuple(headers[i].path for i in order)

    if len(files) > 1:
        duplicates = np.flatnonzero(np.diff(along) < 1e-3)
        if duplicates.size:
            i = int(duplicates[0])
            raise BadDataError(
                f"series {uid} has two slices at the same position {along[i]:.3f} mm "
                f"({files[i]} and {files[i + 1]}); remove the duplicate"
            )
        # Gantry tilt: slices stacked along a direction other than their normal.
        stack_dir = positions_xyz[-1] - positions_xyz[0]
        stack_dir /= np.linalg.norm(stack_dir)
        if np.linalg.norm(np.cross(stack_dir, normal)) > 1e-3:
            angle = np.degrees(np.arccos(np.clip(abs(stack_dir @ normal), -1, 1)))
            raise BadDataError(
                f"series {uid} is acquired with a gantry tilt of {angle:.1f} degrees (slices not stacked "
                "along their normal); resample it to an orthogonal grid first"
            )
    gaps = np.diff(along)
    uneven = False
    if gaps.size:
        slice_gap = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - slice_gap) > SPACING_TOLERANCE * slice_gap + 1e-3)
        if bad.size:
            i = int(bad[0])
            missing = gaps[i] / slice_gap
            what = f"about {round(missing) - 1} slice(s) missing" if missing > 1.5 else "uneven slice spacing"
            message = (
                f"series {uid}: gap of {gaps[i]:.3f} mm between slices at {along[i]:.3f} and {along[i + 1]:.3f} mm "
                f"along the slice normal ({Path(files[i]).name} -> {Path(files[i + 1]).name}), expected "
                f"{slice_gap:.3f} mm: {what}"
            )
            if not allow_uneven_spacing:
                raise BadDataError(message + "; pass --allow-uneven-spacing to resample onto a regular grid")
            log.warning("%s; resampling onto a regular %.3f mm grid", message, slice_gap)
            uneven = True
    else:
        slice_gap = 1.0
    pixel_spacing_rc = headers[0].pixel_spacing_rc
    assert pixel_spacing_rc is not None
    direction = np.column_stack([row_dir, col_dir, normal])
    geometry = Geometry(
        origin_xyz=tuple(float(v) for v in positions_xyz[0]),  # type: ignore[arg-type]
        spacing_xyz=(float(pixel_spacing_rc[1]), float(pixel_spacing_rc[0]), slice_gap),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return SliceStack(files=files, positions_mm=along, geometry=geometry, uneven=uneven)


def _read_pixels(files: tuple[str, ...], uneven: bool = False) -> np.ndarray:
    """HU array (index, row, col) of the files in the given order (rescale applied by GDCM).

    ``uneven``: the stack was already warned about; ITK's own multi-line warning on stderr is muted.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    reader.SetImageIO("GDCMImageIO")
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    try:
        if uneven:
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        image = reader.Execute()
    except RuntimeError as err:
        for path in files:  # name the bad file instead of ITK's generic message
            try:
                single = sitk.ImageFileReader()
                single.SetFileName(path)
                single.SetImageIO("GDCMImageIO")
                single.Execute()
            except RuntimeError:
                raise BadDataError(
                    f"{path}: pixel data unreadable (corrupt, truncated or an unsupported compression)"
                ) from err
        raise BadDataError(f"cannot read DICOM series starting at {files[0]}: {str(err).splitlines()[0]}") from err
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BadDataError(f"{files[0]}: colour (multi-component) images are not CT")
    hu = sitk.GetArrayFromImage(image)
    check_finite(hu, f"DICOM series starting at {files[0]}")
    if hu.dtype != np.int16:
        # Rescale slopes other than 1 give floats; HU are integers to well within int16.
        hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return hu


def _resample_along_normal(hu: np.ndarray, positions_mm: np.ndarray, slice_gap: float) -> np.ndarray:
    """Linear interpolation of unevenly spaced slices onto a regular grid starting at the first."""
    n_out = int(np.floor((positions_mm[-1] - positions_mm[0]) / slice_gap + 1e-6)) + 1
    targets = positions_mm[0] + slice_gap * np.arange(n_out)
    upper = np.clip(np.searchsorted(positions_mm, targets, side="right"), 1, len(positions_mm) - 1)
    lower = upper - 1
    weight = ((targets - positions_mm[lower]) / (positions_mm[upper] - positions_mm[lower])).clip(0, 1)
    out = hu[lower] * (1 - weight)[:, None, None] + hu[upper] * weight[:, None, None]
    return np.rint(out).astype(np.int16)


def load_dicom_series(series: DicomSeries, allow_uneven_spacing: bool = False) -> CtVolume:
    """Check and read one DICOM series into a :class:`CtVolume`."""
    stack = order_slices(series, allow_uneven_spacing=allow_uneven_spacing)
    first = series.headers[0]
    # At least ITK's int16 buffer and numpy's copy of it (rescaled or resampled series need more).
    n_voxels = first.rows * first.columns * len(stack.files)
    claim = f"{len(stack.files)} slices of {first.rows} x {first.columns} pixels"
    check_fits_in_memory(4 * n_voxels, f"series {series.series_uid}", claim)
    hu = _read_pixels(stack.files, uneven=stack.uneven)
    if stack.uneven:
        hu = _resample_along_normal(hu, stack.positions_mm, stack.geometry.spacing_xyz[2])
    meta = {
        k: v
        for k, v in {
            "description": first.description,
            "manufacturer": first.manufacturer,
            "kernel": first.kernel,
            "study_date": first.study_date,
            "patient_id": first.patient_id,
            "n_files": str(series.n_files),
            # One slice has no distance to a next one: the 1 mm in its geometry is a placeholder.
            "slice_spacing": "unknown (a single slice; 1 mm is a placeholder)" if len(stack.files) == 1 else "",
        }.items()
        if v
    }
    return CtVolume(
        hu=hu,
        geometry=stack.geometry,
        series_uid=series.series_uid,
        source=series.folders[0] if len(series.folders) == 1 else ",".join(series.folders),
        format="dicom",
        modality=series.modality,
        meta=meta,
        source_files=series.files,
    )
