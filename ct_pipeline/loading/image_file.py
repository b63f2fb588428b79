"""Single image files other than LUNA16's .mhd: NRRD and NIfTI, read by SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.volume import CtVolume

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
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise BadDataError(f"{path}: unreadable {fmt} file ({str(err).strip().splitlines()[-1][:120]})") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BadDataError(f"{path}: a CT volume is a 3D single-channel image, got {image.GetDimension()}D")
    hu = sitk.GetArrayFromImage(image)
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
