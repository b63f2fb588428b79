"""The one crop convention of the classifiers, for training and for diagnosis.

A crop of ``crop_shape_irc`` voxels starts at ``center - crop_shape // 2`` (the candidate's rounded
voxel lands on voxel ``crop_shape // 2`` of the crop, the book's centring) and is padded with air
beyond the volume's faces; it is never shifted inward. The book shifted crops inward at the faces,
so the same model saw an edge candidate off centre at diagnosis and at the centre nowhere else;
keeping the candidate at the centre is what the classifier's centre head assumes.

A classifier trained at a spacing in mm (its model config's ``crop_spacing_mm``) sees crops
resampled to it (:func:`resampled_crop`): ``crop_shape`` voxels of that many mm, the candidate's
exact (fractional) voxel on voxel ``crop_shape // 2``, so a nodule has one size in voxels whatever
the scanner's slices. Training (from cached native regions) and diagnosis (from the whole
volume) both cut through that one function.
"""

from __future__ import annotations

import math

import numpy as np

from ct_pipeline.errors import BadInputError


def crop_start_irc(center_irc: np.ndarray, crop_shape_irc: tuple[int, int, int]) -> np.ndarray:
    """int64 first voxel (..., 3) of the crop around each rounded voxel centre (..., 3)."""
    return (
        np.rint(np.asarray(center_irc, dtype=np.float64)).astype(np.int64) - np.asarray(crop_shape_irc, np.int64) // 2
    )


def cut_crop(array: np.ndarray, start_irc: np.ndarray, crop_shape_irc: tuple[int, int, int], pad_value) -> np.ndarray:
    """Copy of ``array[start : start + crop_shape]`` (same dtype), ``pad_value`` where it leaves the array."""
    size = np.asarray(crop_shape_irc, dtype=np.int64)
    start = np.asarray(start_irc, dtype=np.int64)
    stop = start + size
    shape = np.asarray(array.shape, dtype=np.int64)
    if (start >= 0).all() and (stop <= shape).all():
        return np.array(array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]])
    out = np.full(tuple(int(n) for n in size), pad_value, dtype=array.dtype)
    src_lo, src_hi = np.maximum(start, 0), np.minimum(stop, shape)
    if (src_hi > src_lo).all():
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = array[
            src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
        ]
    return out


def check_crop_spacing(spacing_irc_mm) -> tuple[float, float, float]:
    """``spacing_irc_mm`` as 3 floats (index, row, col) in mm, each from 0.1 to 20.

    Raises:
        BadInputError: not 3 numbers in that range.
    """
    try:
        values = tuple(float(v) for v in spacing_irc_mm)
    except (TypeError, ValueError) as err:
        raise BadInputError(
            f"crop spacing {spacing_irc_mm!r}: expected 3 numbers in mm (z,y,x), e.g. 1.5,0.7,0.7"
        ) from err
    if len(values) != 3 or not all(math.isfinite(v) and 0.1 <= v <= 20.0 for v in values):
        raise BadInputError(
            f"crop spacing {spacing_irc_mm!r}: expected 3 spacings (z,y,x) from 0.1 to 20 mm, e.g. 1.5,0.7,0.7"
        )
    return values  # type: ignore[return-value]


# The native voxels beyond the sampled span kept around a resampled crop: one for the linear
# interpolation's far neighbour, one spare against float rounding at the box's edge.
_RESAMPLE_MARGIN = 2


def native_extent_irc(
    crop_irc: tuple[int, int, int],
    spacing_irc_mm: tuple[float, float, float] | None,
    native_spacing_irc_mm: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Native voxels (before, after) a rounded centre that a crop reads, each int64 (3,).

    The crop reads the box ``[centre - before, centre + after)``; with ``spacing_irc_mm`` None,
    the native crop's own.
    """
    size = np.asarray(crop_irc, dtype=np.int64)
    if spacing_irc_mm is None:
        return size // 2, size - size // 2
    scale = np.asarray(spacing_irc_mm, np.float64) / np.asarray(native_spacing_irc_mm, np.float64)
    # +0.5: the true centre lies up to half a voxel from the rounded one
    before = np.ceil((size // 2) * scale + 0.5).astype(np.int64) + _RESAMPLE_MARGIN
    after = np.ceil((size - 1 - size // 2) * scale + 0.5).astype(np.int64) + 1 + _RESAMPLE_MARGIN
    return before, after


def resampled_crop(
    array: np.ndarray,
    center_irc: np.ndarray,
    crop_irc: tuple[int, int, int],
    native_spacing_irc_mm: tuple[float, float, float],
    spacing_irc_mm: tuple[float, float, float] | None,
    *,
    origin_irc: tuple[int, int, int] = (0, 0, 0),
    pad_hu: float = -1000.0,
) -> np.ndarray:
    """The classifiers' crop of ``crop_irc`` voxels at ``spacing_irc_mm``, centred on ``center_irc``.

    The one crop function of training (from cached regions) and diagnosis (from whole volumes).

    Args:
        array: (index, row, col) HU on the series' native grid; may be a box of the volume whose
            first voxel is full-volume voxel ``origin_irc``.
        center_irc: (3,) full-volume voxel index of the centre (fractional allowed).
        crop_irc: crop size (index, row, col) in voxels.
        native_spacing_irc_mm: the volume's voxel spacing (index, row, col) in mm (the geometry's
            ``spacing_xyz`` reversed).
        spacing_irc_mm: the crop's voxel spacing in mm, or None for native: then the crop is
            :func:`cut_crop` around the rounded centre (the book's; same dtype as ``array``).
        origin_irc: where ``array`` sits in the volume.
        pad_hu: the value beyond the volume's faces (air).

    Returns:
        ``crop_irc`` array: native, ``array``'s dtype; resampled, float32 trilinear samples with
        crop voxel ``crop_irc // 2`` exactly on ``center_irc``. The axes stay the array's (no
        reorientation), as in the native crop.
    """
    origin = np.asarray(origin_irc, dtype=np.int64)
    if spacing_irc_mm is None:
        return cut_crop(array, crop_start_irc(center_irc, crop_irc) - origin, crop_irc, pad_hu)
    center = np.asarray(center_irc, dtype=np.float64)
    before, after = native_extent_irc(crop_irc, spacing_irc_mm, native_spacing_irc_mm)
    box_start = np.rint(center).astype(np.int64) - before
    crop = cut_crop(array, box_start - origin, tuple(int(n) for n in before + after), pad_hu).astype(np.float32)
    scale = np.asarray(spacing_irc_mm, np.float64) / np.asarray(native_spacing_irc_mm, np.float64)
    # Trilinear interpolation on an axis-aligned grid is separable: one pass per axis, each output
    # sample a blend of its two neighbours. The same samples as SimpleITK's Resample with
    # sitkLinear (the tests hold them to it) at about 1 ms per 32x48x48 crop against its 3-12 ms
    # (it maps every output point through a transform), which would cost minutes per CPU training
    # epoch of 20,000 crops. Elementwise on purpose: as small matrix products, OpenBLAS's threads
    # made a crop take 50 ms on a busy machine.
    for axis, n in enumerate(crop_irc):
        position = center[axis] - box_start[axis] + (np.arange(n) - n // 2) * scale[axis]
        low = np.floor(position).astype(np.int64)
        shape = [1, 1, 1]
        shape[axis] = n
        fraction = (position - low).astype(np.float32).reshape(shape)
        below, above = np.take(crop, low, axis=axis), np.take(crop, low + 1, axis=axis)
        crop = below + (above - below) * fraction
    return np.ascontiguousarray(crop)
