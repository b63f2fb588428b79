"""Write a HU volume as a DICOM CT series (one file per slice), for synthetic data and tests.

DICOM stores a slice stack as per-slice ImagePositionPatient plus one ImageOrientationPatient
(the row and column directions); readers take the slice normal as their cross product and sort
slices along it. So only right-handed orthonormal grids survive a round trip unchanged, and
:func:`write_dicom_series` refuses the others rather than write a series that reads back flipped.

Pixels go through GDCM's writer, which applies the inverse of the rescale tags itself:
the files store ``(hu - intercept) / slope`` and readers get ``hu`` back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ct_pipeline.atomic import atomic_write_with
from ct_pipeline.errors import BadInputError
from ct_pipeline.geometry import Geometry
from ct_pipeline.paths import validate_series_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def derived_uid(*parts: object) -> str:
    """A deterministic valid DICOM UID from ``parts`` ("2.25." + a name-based UUID as an integer)."""
    name = "/".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _ds(values: Sequence[float]) -> str:
    # DICOM decimal strings hold at most 16 characters; 10 significant digits fit with sign,
    # point and exponent, and are far below the 1e-4 mm a geometry check cares about.
    return "\\".join(f"{float(v):.10g}" for v in values)


def _check_direction(direction: np.ndarray) -> None:
    orthonormal = np.allclose(direction.T @ direction, np.eye(3), atol=1e-6)
    if not orthonormal or np.linalg.det(direction) < 0:
        raise BadInputError(
            f"direction {np.round(direction.ravel(), 6).tolist()} is not a right-handed orthonormal "
            "matrix, which DICOM cannot store (readers derive the slice axis as row x column); "
            "flip the array along the slice axis and negate the third direction column first"
        )


def write_dicom_series(
    hu: np.ndarray,
    geometry: Geometry,
    folder: Path,
    series_uid: str,
    *,
    study_uid: str | None = None,
    modality: str = "CT",
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    extra_tags: Mapping[str, str] | None = None,
    slice_indices: Sequence[int] | None = None,
    file_name_pattern: str = "{:06d}.dcm",
    atomic_files: bool = True,
) -> list[Path]:
    """Write ``hu`` (int16, shape (index, row, col)) as one DICOM file per slice in ``folder``.

    Args:
        hu: integer HU volume, shape (index, row, col) = (z, y, x).
        geometry: where the grid sits; its direction must be right-handed and orthonormal.
        folder: created if missing; existing files with the same names are replaced.
        series_uid: SeriesInstanceUID (a valid DICOM UID).
        study_uid: StudyInstanceUID; default derived from ``series_uid``.
        modality: 0008|0060.
        rescale_intercept, rescale_slope: stored value = (hu - intercept) / slope; must give
            integers that fit 16 bits.
        extra_tags: more ``"gggg|eeee": value`` tags for every slice (they override ours).
        slice_indices: write only these slices (default all), e.g. to make a gap for a test.
        file_name_pattern: file name for slice index ``i`` (``pattern.format(i)``).
        atomic_files: write each file to a temporary name, fsync and rename (the default). Pass
            False only when the caller makes the whole folder appear atomically (write into a
            temporary folder, then rename it): per-file fsync costs ~35 ms a slice here.

    Returns:
        The written files in slice order.

    Raises:
        BadInputError: bad array shape/type, UID, direction, rescale or slice index.
    """
    import SimpleITK as sitk  # heavy import: keep it out of module import time

    validate_series_uid(series_uid)
    if study_uid is not None:
        validate_series_uid(study_uid)
    hu = np.asarray(hu)
    if hu.ndim != 3 or min(hu.shape) == 0:
        raise BadInputError(f"hu has shape {hu.shape}; expected a non-empty (index, row, col) volume")
    if not np.issubdtype(hu.dtype, np.integer):
        raise BadInputError(f"hu has dtype {hu.dtype}; expected integer HU (round and cast to int16 first)")
    if rescale_slope <= 0:
        raise BadInputError(f"rescale slope {rescale_slope} must be positive")
    hu_min, hu_max = int(hu.min()), int(hu.max())
    if rescale_slope == 1.0 and float(rescale_intercept).is_integer():
        exact = True  # the common case: integer HU minus an integer stay integers (no pass over the volume)
    else:
        stored = (hu.astype(np.float64) - rescale_intercept) / rescale_slope
        exact = bool(np.allclose(stored, np.rint(stored)))
    stored_range = sorted(((hu_min - rescale_intercept) / rescale_slope, (hu_max - rescale_intercept) / rescale_slope))
    if not exact or stored_range[0] < -32768 or stored_range[1] > 65535:
        raise BadInputError(
            f"HU range [{hu_min}, {hu_max}] with intercept {rescale_intercept} and slope {rescale_slope} "
            "does not map to 16-bit integers; pick an intercept/slope that does"
        )
    direction = geometry.direction_matrix
    _check_direction(direction)
    n_slices = hu.shape[0]
    indices = list(range(n_slices)) if slice_indices is None else [int(i) for i in slice_indices]
    bad = [i for i in indices if not 0 <= i < n_slices]
    if bad:
        raise BadInputError(f"slice indices {bad[:5]} are outside 0..{n_slices - 1}")

    study = study_uid or derived_uid(series_uid, "study")
    spacing_x, spacing_y, spacing_z = (float(v) for v in geometry.spacing_xyz)
    # GDCM picks the stored type from the input type and inverts the rescale itself; int16 input
    # keeps negative HU representable whatever the intercept.
    pixel_type = np.int16 if hu_min >= -32768 and hu_max <= 32767 else np.int32
    common = {
        "0008|0060": modality,
        "0008|0016": CT_IMAGE_STORAGE,
        "0020|000e": series_uid,
        "0020|000d": study,
        "0020|0052": derived_uid(series_uid, "frame-of-reference"),  # FrameOfReferenceUID (the CT IOD needs it)
        "0020|0037": _ds([*direction[:, 0], *direction[:, 1]]),
        "0028|0030": _ds([spacing_y, spacing_x]),  # row spacing \ column spacing
        "0018|0050": _ds([spacing_z]),
        "0028|1052": _ds([rescale_intercept]),
        "0028|1053": _ds([rescale_slope]),
        "0028|1054": "HU",
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # the temporary file's name has no .dcm to guess it from
    writer.KeepOriginalImageUIDOn()  # otherwise GDCM replaces our UIDs with random ones
    paths: list[Path] = []
    for index in indices:
        image = sitk.GetImageFromArray(np.ascontiguousarray(hu[index], dtype=pixel_type))
        image.SetSpacing((spacing_x, spacing_y))
        position_xyz = geometry.irc_to_xyz((float(index), 0.0, 0.0))
        tags = {
            **common,
            "0008|0018": derived_uid(series_uid, "slice", index),
            "0020|0032": _ds(position_xyz),
            "0020|0013": str(index + 1),
            "0020|1041": _ds([float(position_xyz @ direction[:, 2])]),  # SliceLocation
            **(extra_tags or {}),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        path = folder / file_name_pattern.format(index)
        if atomic_files:

            def _write(tmp: Path, image=image) -> None:
                writer.SetFileName(str(tmp))
                writer.Execute(image)

            atomic_write_with(path, _write)
        else:
            writer.SetFileName(str(path))
            writer.Execute(image)
        paths.append(path)
    return paths
