"""Single image files other than LUNA16's .mhd: NRRD and NIfTI, read by SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.limits import check_finite, check_fits_in_memory, non_finite_error
from ct_pipeline.loading.nifti_values import nifti_non_finite
from ct_pipeline.volume import CtVolume

_ITEM_BYTES = {
    sitk.sitkInt8: 1,
    sitk.sitkUInt8: 1,
    sitk.sitkInt16: 2,
    sitk.sitkUInt16: 2,
    sitk.sitkInt32: 4,
    sitk.sitkUInt32: 4,
    sitk.sitkFloat32: 4,
    sitk.sitkInt64: 8,
    sitk.sitkUInt64: 8,
    sitk.sitkFloat64: 8,
}
IMAGE_SUFFIXES = {".nrrd": "nrrd", ".nhdr": "nrrd", ".nii": "nifti", ".nii.gz": "nifti", ".mha": "mha"}


def image_format(path: Path) -> str | None:
    """The format name for a supported single-file image, or None."""
    name = path.name.lower()
    for suffix, fmt in IMAGE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def image_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_image_file(path: Path) -> CtVolume:
    """Read a NRRD/NIfTI/MHA file. Its 'series UID' is the file name without suffix."""
    fmt = image_format(path)
    if fmt is None:
        raise BadDataError(f"{path}: not a supported image file (expected one of {sorted(IMAGE_SUFFIXES)} or .mhd)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: sizes are checked before any voxel is read
    except RuntimeError as err:
        raise BadDataError(f"{path}: unreadable {fmt} file ({str(err).strip().splitlines()[-1][:120]})") from err
    components = reader.GetNumberOfComponents()
    if components != 1:
        raise BadDataError(
            f"{path}: has {components} components per voxel (a vector or colour image); a CT needs 1, "
            "a number of HU per voxel"
        )
    if reader.GetDimension() != 3:
        raise BadDataError(f"{path}: a CT volume is a 3D image, got {reader.GetDimension()}D")
    size_xyz = reader.GetSize()
    itemsize = _ITEM_BYTES.get(reader.GetPixelID(), 8)
    # ITK's buffer and numpy's copy of it, then (other types) a float intermediate and the int16 result.
    per_voxel = 2 * itemsize + (0 if reader.GetPixelID() == sitk.sitkInt16 else max(itemsize, 4) + 2)
    claim = f"size {' '.join(str(n) for n in size_xyz)} of {sitk.GetPixelIDValueAsString(reader.GetPixelID())}"
    check_fits_in_memory(int(np.prod(size_xyz, dtype=np.float64)) * per_voxel, str(path), claim)
    if fmt == "nifti" and reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        n_bad, n_voxels = nifti_non_finite(path)  # ITK would hand them over as 0
        if n_bad:
            raise non_finite_error(str(path), n_bad, n_voxels)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise BadDataError(f"{path}: unreadable {fmt} file ({str(err).strip().splitlines()[-1][:120]})") from err
    hu = sitk.GetArrayFromImage(image)
    check_finite(hu, str(path))
    if hu.dtype != np.int16:
        hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    geometry = Geometry(
        origin_xyz=tuple(image.GetOrigin()),  # type: ignore[arg-type]
        spacing_xyz=tuple(image.GetSpacing()),  # type: ignore[arg-type]
        direction=tuple(image.GetDirection()),
    )
    return CtVolume(
        hu=hu, geometry=geometry, series_uid=image_stem(path), source=str(path), format=fmt, source_files=(str(path),)
    )
