"""Nodule masks for segmentation, built from the annotations (centre and diameter) and the HU.

A nodule's mask is the set of voxels that are
- inside the annotated sphere (diameter in mm, honouring anisotropic voxels),
- denser than a threshold (default -700 HU, the book's), and
- 6-connected to the centre through such voxels.

The book grew a box from the centre along each axis while the voxels stayed above the
threshold, ignoring the diameter, and kept the dense voxels of the box. A vessel running along
an axis through the nodule, or a nodule touching the chest wall, makes that box (and the mask)
run far beyond the nodule, and dense tissue in the box's corners that never touches the nodule
is kept too. :func:`book_box_mask` is that rule, kept for comparison (tests and BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

DEFAULT_MASK_THRESHOLD_HU = -700.0


@dataclass(frozen=True)
class NoduleMask:
    """One nodule's mask as a small box of a volume.

    Attributes:
        start_irc: voxel index (in the array the mask was built from) of ``mask[0, 0, 0]``.
        mask: bool (index, row, col) box.
        center_irc: the annotated centre, voxel index (fractional), same frame as ``start_irc``.
    """

    start_irc: tuple[int, int, int]
    mask: np.ndarray
    center_irc: tuple[float, float, float]

    @property
    def stop_irc(self) -> tuple[int, int, int]:
        return tuple(int(a + n) for a, n in zip(self.start_irc, self.mask.shape))  # type: ignore[return-value]

    def paint(self, out: np.ndarray, out_start_irc: tuple[int, int, int] = (0, 0, 0)) -> None:
        """OR this mask into ``out``, a bool array whose ``[0, 0, 0]`` is voxel ``out_start_irc``."""
        lo = np.maximum(np.asarray(self.start_irc), np.asarray(out_start_irc))
        hi = np.minimum(np.asarray(self.stop_irc), np.asarray(out_start_irc) + np.asarray(out.shape))
        if (hi <= lo).any():
            return
        src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, self.start_irc))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, out_start_irc))
        out[dst] |= self.mask[src]


def nodule_mask_box(
    hu: np.ndarray,
    center_irc: tuple[float, float, float],
    diameter_mm: float,
    spacing_xyz: tuple[float, float, float],
    threshold_hu: float = DEFAULT_MASK_THRESHOLD_HU,
) -> NoduleMask:
    """The mask of one nodule, as the box of ``hu`` around its annotated sphere.

    Args:
        hu: (index, row, col) HU array (any integer or float dtype; a memory map is fine).
        center_irc: annotated centre in voxels of ``hu`` (fractional allowed).
        diameter_mm: annotated diameter; the sphere's radius is half of it (at least half a voxel).
        spacing_xyz: voxel size in mm, (x, y, z) order like everywhere else.
        threshold_hu: voxels must be denser than this.

    When the centre voxel is not dense enough (a part-solid or cavitated nodule), the dense
    component nearest the centre inside the sphere is used; when the sphere holds no dense voxel
    at all, the whole sphere is the mask (the annotation is then the only evidence).
    """
    spacing_irc = np.asarray(spacing_xyz, dtype=np.float64)[::-1]
    center = np.asarray(center_irc, dtype=np.float64)
    radius_mm = max(float(diameter_mm) / 2.0, 0.5 * float(spacing_irc.min()))
    radius_vox = radius_mm / spacing_irc
    shape = np.asarray(hu.shape)
    start = np.clip(np.floor(center - radius_vox).astype(np.int64), 0, shape)
    stop = np.clip(np.ceil(center + radius_vox).astype(np.int64) + 1, 0, shape)
    stop = np.maximum(stop, start)
    box = np.asarray(hu[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]])
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(start, stop, center, spacing_irc)]
    dist_sq = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    sphere = dist_sq <= radius_mm**2
    dense = sphere & (box > threshold_hu)
    mask = _component_at_centre(dense, dist_sq)
    if mask is None:
        log.debug("no voxel above %s HU in the sphere at %s; using the sphere", threshold_hu, tuple(center))
        mask = sphere
    return NoduleMask(tuple(int(v) for v in start), mask, tuple(float(v) for v in center))  # type: ignore[arg-type]


def _component_at_centre(dense: np.ndarray, dist_sq: np.ndarray) -> np.ndarray | None:
    if not dense.any():
        return None
    labels, _ = ndimage.label(dense)
    # the component holding the dense voxel nearest the centre (the centre itself when dense)
    nearest = np.unravel_index(np.argmin(np.where(dense, dist_sq, np.inf)), dense.shape)
    return labels == labels[nearest]


def nodule_mask(
    region_hu: np.ndarray,
    center_irc: tuple[float, float, float],
    diameter_mm: float,
    spacing_xyz: tuple[float, float, float],
    threshold_hu: float = DEFAULT_MASK_THRESHOLD_HU,
) -> np.ndarray:
    """Like :func:`nodule_mask_box` but as a bool array of ``region_hu``'s full shape."""
    out = np.zeros(region_hu.shape, dtype=bool)
    nodule_mask_box(region_hu, center_irc, diameter_mm, spacing_xyz, threshold_hu).paint(out)
    return out


def book_box_mask(
    hu: np.ndarray, center_irc: tuple[int, int, int], threshold_hu: float = DEFAULT_MASK_THRESHOLD_HU
) -> np.ndarray:
    """The book's rule (``Ct.buildAnnotationMask``), for comparison: bool array of ``hu``'s shape.

    From the centre, each axis' radius grows from 2 while both voxels at that distance along
    the axis are above the threshold; the mask is the box's voxels above the threshold.
    """
    center = [int(round(v)) for v in center_irc]
    radii = []
    for axis in range(3):
        radius = 2
        try:
            while True:
                low, high = list(center), list(center)
                low[axis] -= radius
                high[axis] += radius
                if low[axis] < 0 or not (hu[tuple(high)] > threshold_hu and hu[tuple(low)] > threshold_hu):
                    break
                radius += 1
        except IndexError:
            radius -= 1
        radii.append(radius)
    box = np.zeros(hu.shape, dtype=bool)
    box[tuple(slice(max(c - r, 0), c + r + 1) for c, r in zip(center, radii))] = True
    return box & (np.asarray(hu) > threshold_hu)
