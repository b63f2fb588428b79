"""MetaImage (.mhd header + .raw data), the LUNA16 format.

SimpleITK reads these fine, but on a truncated .raw it fails with an ITK exception that names
neither the expected nor the actual size, and a half-downloaded LUNA16 subset is common. So the
header is checked against the data file first, then the pixels are read straight from the raw
file with numpy (the same bytes SimpleITK would copy, minus one copy: this is the fast path
measured in BENCHMARKS.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.limits import check_finite, check_fits_in_memory
from ct_pipeline.volume import CtVolume

_MET_TYPES = {
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}


# Without these a header says nothing about its voxels; ITK's own defaults would hide a cut-off file.
REQUIRED_KEYS = ("DimSize", "ElementType", "ElementDataFile")


def read_mhd_header(path: Path) -> dict[str, str]:
    """The ``Key = Value`` lines of an .mhd header.

    Raises:
        BadDataError: unreadable, empty, a line that is not ``Key = Value``, or a required key
            (:data:`REQUIRED_KEYS`) missing, as in a truncated download.
    """
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise BadDataError(f"cannot read {path}: {err.strerror}") from err
    if not text.strip():
        raise BadDataError(
            f"{path}: the MetaImage header is empty ({len(text.encode('latin-1'))} bytes); "
            f"expected Key = Value lines with {', '.join(REQUIRED_KEYS)}: re-download or re-write it"
        )
    header: dict[str, str] = {}
    lines = text.splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if "=" not in line:
            if line_no == len(lines) and not text.endswith(("\n", "\r")):
                raise BadDataError(
                    f"{path}:{line_no}: the header ends mid-line at {line.strip()[:60]!r} (truncated); "
                    "re-download or re-write it"
                )
            raise BadDataError(f"{path}:{line_no}: not a MetaImage header line: {line.strip()[:60]!r}")
        key, value = line.split("=", 1)
        header[key.strip()] = value.strip()
    missing = [key for key in REQUIRED_KEYS if not header.get(key)]
    if missing:
        raise BadDataError(
            f"{path}: the MetaImage header lacks {', '.join(missing)} (truncated or incomplete); "
            "re-download or re-write it"
        )
    return header


def _data_file(header: dict[str, str], path: Path) -> Path:
    """The data file the header names (relative to the header's folder), checked to be a file."""
    data_file = header["ElementDataFile"]
    if data_file in ("LOCAL", "LIST") or "%" in data_file:
        raise BadDataError(f"{path}: ElementDataFile {data_file!r} is not supported; expected a separate .raw file")
    if "\0" in data_file:  # no file can have that name; pathlib would only say it is missing
        raise BadDataError(
            f"{path}: ElementDataFile {data_file[:80]!r} is not a usable file name (it holds a NUL byte)"
        )
    raw_path = path.parent / data_file
    try:
        is_folder, is_file = raw_path.is_dir(), raw_path.is_file()
    except (OSError, ValueError) as err:  # a name too long, or with a NUL byte
        reason = getattr(err, "strerror", None) or err
        raise BadDataError(f"{path}: ElementDataFile {data_file[:80]!r} is not a usable file name ({reason})") from err
    if is_folder:
        raise BadDataError(
            f"{path}: ElementDataFile {data_file!r} names a folder ({raw_path}), not a data file; "
            "fix the header to name the .raw file"
        )
    if not is_file:
        raise BadDataError(f"{path}: its data file {raw_path} is missing")
    return raw_path


def mhd_data_files(header_path: Path) -> list[Path]:
    """The files reading ``header_path`` touches: the header itself, then the data file it names.

    Raises:
        BadDataError: the header is unreadable or names no readable data file (as :func:`load_mhd`).
    """
    return [header_path, _data_file(read_mhd_header(header_path), header_path)]


def _numbers(header: dict[str, str], key: str, count: int, path: Path, default: str | None = None) -> list[float]:
    raw = header.get(key, default)
    if raw is None:
        raise BadDataError(f"{path}: MetaImage header has no {key}")
    try:
        values = [float(v) for v in raw.split()]
    except ValueError as err:
        raise BadDataError(f"{path}: {key} = {raw!r} is not a list of numbers") from err
    if len(values) != count or not all(np.isfinite(values)):
        raise BadDataError(f"{path}: {key} must hold {count} finite numbers, got {raw!r}")
    return values


def mhd_spacing_xyz(path: Path) -> tuple[float, float, float]:
    """The header's ElementSpacing (x, y, z) in mm, without reading the data file."""
    return _spacing_xyz(read_mhd_header(path), path)


def _spacing_xyz(header: dict[str, str], path: Path) -> tuple[float, float, float]:
    spacing_xyz = _numbers(header, "ElementSpacing", 3, path, default=header.get("ElementSize", "1 1 1"))
    if min(spacing_xyz) <= 0:
        raise BadDataError(f"{path}: ElementSpacing {spacing_xyz} must be positive")
    return tuple(spacing_xyz)  # type: ignore[return-value]


def load_mhd(path: Path, series_uid: str | None = None) -> CtVolume:
    """Read an .mhd/.raw pair into a :class:`CtVolume` (HU as stored, usually int16).

    Raises:
        BadDataError: header unreadable or unsupported, or the data file's size disagrees with it.
    """
    header = read_mhd_header(path)
    if header.get("NDims", "3") != "3":
        raise BadDataError(f"{path}: NDims = {header.get('NDims')}; a CT volume has 3 dimensions")
    if header.get("CompressedData", "False").lower() == "true":
        raise BadDataError(f"{path}: compressed MetaImage data is not supported; decompress it first")
    if header.get("ElementNumberOfChannels", "1") != "1":
        raise BadDataError(f"{path}: ElementNumberOfChannels must be 1 for a CT volume")
    element_type = header.get("ElementType", "")
    if element_type not in _MET_TYPES:
        raise BadDataError(
            f"{path}: ElementType {element_type!r} is not supported (expected one of {sorted(_MET_TYPES)})"
        )
    dtype = np.dtype(_MET_TYPES[element_type])
    big_endian = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = dtype.newbyteorder(">" if big_endian else "<")

    size_xyz = [int(v) for v in _numbers(header, "DimSize", 3, path)]
    if min(size_xyz) <= 0:
        raise BadDataError(f"{path}: DimSize {size_xyz} has a zero or negative size")
    spacing_xyz = _spacing_xyz(header, path)
    origin_xyz = _numbers(header, "Offset", 3, path, default=header.get("Origin", header.get("Position", "0 0 0")))
    direction = _numbers(
        header,
        "TransformMatrix",
        9,
        path,
        default=header.get("Rotation", header.get("Orientation", "1 0 0 0 1 0 0 0 1")),
    )
    # MetaImage stores the direction column-major (each axis vector in turn); SimpleITK's
    # GetDirection() and ours are row-major, hence the transpose.
    direction_rowmajor = np.asarray(direction).reshape(3, 3).T
    if abs(np.linalg.det(direction_rowmajor)) < 1e-6:
        raise BadDataError(f"{path}: TransformMatrix {direction} is singular")

    raw_path = _data_file(header, path)
    expected = math.prod(size_xyz) * dtype.itemsize
    try:
        actual = raw_path.stat().st_size
    except OSError as err:
        raise BadDataError(f"cannot read {raw_path}: {err.strerror}") from err
    if actual != expected:
        n_voxels = math.prod(size_xyz)
        fitting = [
            name for name, t in _MET_TYPES.items() if name != element_type and n_voxels * np.dtype(t).itemsize == actual
        ]
        # A size that fits another element type exactly points at the header, not at the download.
        advice = (
            f"the header's ElementType is wrong (the size fits {' or '.join(fitting)}) or the file is "
            f"{'truncated' if actual < expected else 'too long'}: fix the header, or re-download the file"
            if fitting
            else f"the file is {'truncated' if actual < expected else 'too long'}: re-download or re-extract it"
        )
        raise BadDataError(
            f"{raw_path}: {actual} bytes, but the header {path.name} (DimSize {size_xyz}, {element_type}) "
            f"needs {expected}; {advice}"
        )
    # Swapping bytes copies the array once more.
    swap_copies = 2 if big_endian and dtype.itemsize > 1 else 1
    claim = f"DimSize {' '.join(str(n) for n in size_xyz)} of {element_type}"
    check_fits_in_memory(expected * swap_copies, str(path), claim)
    try:
        hu = np.fromfile(raw_path, dtype=dtype)
    except OSError as err:
        raise BadDataError(f"cannot read {raw_path}: {err.strerror}") from err
    hu = hu.reshape(size_xyz[::-1])
    if big_endian:
        hu = hu.astype(dtype.newbyteorder("="))
    check_finite(hu, str(path))
    geometry = Geometry(
        origin_xyz=tuple(origin_xyz),  # type: ignore[arg-type]
        spacing_xyz=tuple(spacing_xyz),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction_rowmajor.ravel()),
    )
    uid = series_uid or path.stem
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid=uid,
        source=str(path),
        format="mhd",
        modality="CT",
        source_files=(str(path), str(raw_path)),
    )


def write_mhd(volume_hu: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write an int16 volume (index, row, col) as ``path`` (.mhd) + ``path.with_suffix('.raw')``.

    Both files are written to temporary names and renamed, data first, so a reader never sees a
    header without its complete data.
    """
    hu = np.ascontiguousarray(volume_hu, dtype="<i2")
    raw_path = path.with_suffix(".raw")
    direction_colmajor = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3).T.ravel()
    fmt = lambda values: " ".join(repr(float(v)) for v in values)  # noqa: E731
    header = "\n".join(
        [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "CompressedData = False",
            f"TransformMatrix = {fmt(direction_colmajor)}",
            f"Offset = {fmt(geometry.origin_xyz)}",
            "CenterOfRotation = 0 0 0",
            "AnatomicalOrientation = RAI",
            f"ElementSpacing = {fmt(geometry.spacing_xyz)}",
            f"DimSize = {hu.shape[2]} {hu.shape[1]} {hu.shape[0]}",
            "ElementType = MET_SHORT",
            f"ElementDataFile = {raw_path.name}",
            "",
        ]
    )
    from ct_pipeline.atomic import atomic_write_bytes

    atomic_write_bytes(raw_path, hu.tobytes())
    atomic_write_bytes(path, header.encode("ascii"))
