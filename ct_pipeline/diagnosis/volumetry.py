"""Measurements of a nodule's mask component: volume, long and short axis, mean diameter, HU.

The mask measured is the U-Net's (a :class:`~ct_pipeline.diagnosis.result.NoduleMask`): what the
model outlined, no more. Distances are in patient millimetres from the voxel spacing; the
direction matrix is orthonormal, so they hold for any orientation of the grid. The axes are
measured in the plane of the scan's slices (the axial plane except on tilted acquisitions), on
the slice where the mask is longest: ``long_axis_mm`` is its longest extent there and
``short_axis_mm`` its width perpendicular to that; ``mean_diameter_mm`` is their mean, the figure
screening guidelines (Lung-RADS, Fleischner) use. Extents are measured between pixel centres
plus one pixel, so a single pixel is one pixel wide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.spatial import ConvexHull, QhullError


@dataclass(frozen=True)
class MaskMeasurement:
    """Volume (mm^3), axes (mm), the slice they were measured on, and HU over the mask."""

    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    axis_slice_index: int
    hu_mean: float
    hu_std: float
    n_voxels: int

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data) -> MaskMeasurement:
        """The inverse of :meth:`to_dict` (KeyError, TypeError or ValueError when garbled)."""
        counts = ("axis_slice_index", "n_voxels")
        return cls(**{f.name: (int if f.name in counts else float)(data[f.name]) for f in fields(cls)})


def measure_mask(
    mask: np.ndarray, start_irc: tuple[int, int, int], spacing_irc_mm: tuple[float, float, float], hu: np.ndarray
) -> MaskMeasurement:
    """Measure ``mask`` (bool (index, row, col), its first voxel at ``start_irc`` of the volume ``hu``)."""
    spacing = np.asarray(spacing_irc_mm, dtype=np.float64)
    box = tuple(slice(int(s), int(s) + n) for s, n in zip(start_irc, mask.shape))
    values = hu[box][mask].astype(np.float64)
    long_mm = short_mm = 0.0
    slice_index = int(start_irc[0])
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        length, width = axes_mm(mask[k], spacing[1:])
        if length > long_mm:
            long_mm, short_mm, slice_index = length, width, int(start_irc[0]) + int(k)
    return MaskMeasurement(
        volume_mm3=float(values.size * np.prod(spacing)),
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        mean_diameter_mm=(long_mm + short_mm) / 2.0,
        axis_slice_index=slice_index,
        hu_mean=float(values.mean()) if values.size else float("nan"),
        hu_std=float(values.std()) if values.size else float("nan"),
        n_voxels=int(values.size),
    )


def axes_mm(pixels: np.ndarray, spacing_rc_mm: np.ndarray) -> tuple[float, float]:
    """Longest extent of one slice's pixels (bool (row, col)) and their width perpendicular to it, mm."""
    points = np.argwhere(pixels).astype(np.float64) * spacing_rc_mm
    pixel_mm = float(np.mean(spacing_rc_mm))
    if len(points) == 0:
        return 0.0, 0.0
    if len(points) >= 3:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all on one line: every point is kept
            pass
    gaps = points[:, None, :] - points[None, :, :]
    lengths = np.sqrt((gaps**2).sum(axis=-1))
    i, j = np.unravel_index(int(lengths.argmax()), lengths.shape)
    length = float(lengths[i, j])
    if length == 0.0:
        return pixel_mm, pixel_mm
    direction = (points[j] - points[i]) / length
    across = points @ np.array([-direction[1], direction[0]])
    return length + pixel_mm, float(across.max() - across.min()) + pixel_mm
