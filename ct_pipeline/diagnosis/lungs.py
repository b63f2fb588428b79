"""Where the lungs are, from HU alone: the region the U-Net needs to look at.

The U-Net dominates the pipeline's time, and most of a chest CT is not lung. A simple mask is
enough to skip the rest: air (below ``lung_hu_threshold``) that is not connected to the image
border -- the air around the patient is -- and forms a sizeable 3D component, dilated by
``lung_margin_mm`` so that nodules on the lung wall and the mediastinum keep all their voxels.

Everything runs on a grid 4x coarser in-plane (4x4-pixel means), which removes the noise of
sharp reconstruction kernels and keeps this step to a fraction of a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

COARSE = 4  # in-plane pixels per coarse cell; also the U-Net's pooling alignment
MIN_COMPONENT_FRACTION = 0.01  # air pockets smaller than 1% of the largest one are ignored


@dataclass(frozen=True, eq=False)
class LungRegion:
    """The dilated lung region on the coarse grid.

    Attributes:
        coarse_mask: bool (index, ceil(rows/4), ceil(cols/4)); True where the U-Net must run.
        shape_irc: the full volume's shape.
        lung_volume_ml: volume of the air-filled lungs found (before dilation).
    """

    coarse_mask: np.ndarray
    shape_irc: tuple[int, int, int]
    lung_volume_ml: float

    def slice_box(self, index: int) -> tuple[int, int, int, int] | None:
        """Full-resolution (row0, row1, col0, col1) covering the region in slice ``index``, or None.

        Starts are multiples of 4; ends are clipped to the image.
        """
        cells = self.coarse_mask[index]
        rows = np.flatnonzero(cells.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(cells.any(axis=0))
        _, n_rows, n_cols = self.shape_irc
        return (
            int(rows[0]) * COARSE,
            min(n_rows, (int(rows[-1]) + 1) * COARSE),
            int(cols[0]) * COARSE,
            min(n_cols, (int(cols[-1]) + 1) * COARSE),
        )

    def full_mask(self, index: slice | int, rows: slice, cols: slice) -> np.ndarray:
        """The region at full resolution for ``[index, rows, cols]`` (bool)."""
        coarse = self.coarse_mask[index]
        full = np.repeat(np.repeat(coarse, COARSE, axis=-2), COARSE, axis=-1)
        return full[..., rows, cols]

    @property
    def fraction(self) -> float:
        """Fraction of the volume's voxels inside the region."""
        return float(self.coarse_mask.mean())


def _coarse_mean(hu: np.ndarray) -> np.ndarray:
    """(I, R, C) HU -> (I, ceil(R/4), ceil(C/4)) float32 means of 4x4 cells (edge cells padded).

    Slice by slice, so no float copy of the volume is made.
    """
    n_index, n_rows, n_cols = hu.shape
    pad_r, pad_c = -n_rows % COARSE, -n_cols % COARSE
    out = np.empty((n_index, (n_rows + pad_r) // COARSE, (n_cols + pad_c) // COARSE), dtype=np.float32)
    for index in range(n_index):
        plane = hu[index]
        if pad_r or pad_c:
            plane = np.pad(plane, ((0, pad_r), (0, pad_c)), mode="edge")
        cells = plane.reshape(out.shape[1], COARSE, out.shape[2], COARSE)
        out[index] = cells.mean(axis=(1, 3), dtype=np.float32)
    return out


def find_lung_region(
    hu: np.ndarray,
    spacing_irc_mm: tuple[float, float, float],
    margin_mm: float = 15.0,
    air_hu: float = -400.0,
) -> LungRegion | None:
    """The lungs of ``hu`` dilated by ``margin_mm``, or None when no enclosed air is found.

    Args:
        hu: (index, row, col) HU, any integer or float dtype.
        spacing_irc_mm: voxel size along index, row, col, mm.
        margin_mm: dilation of the air-filled lung, mm.
        air_hu: HU threshold for air.
    """
    air = _coarse_mean(hu) < air_hu
    labels, n_labels = ndimage.label(air)
    if n_labels == 0:
        return None
    # Air touching the in-plane border of any slice is outside the patient.
    border = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)
    sizes[0] = 0
    sizes[np.unique(border)] = 0
    if sizes.max() == 0:
        return None
    keep = sizes >= max(1, MIN_COMPONENT_FRACTION * sizes.max())
    lungs = keep[labels]
    coarse_spacing = (spacing_irc_mm[0], spacing_irc_mm[1] * COARSE, spacing_irc_mm[2] * COARSE)
    cell_volume_ml = float(np.prod(coarse_spacing)) / 1000.0
    # One coarse cell of slack: a cell counts as air on its mean, so lung pixels can sit in the
    # neighbouring cell.
    reach_mm = margin_mm + max(coarse_spacing[1], coarse_spacing[2])
    distance_mm = ndimage.distance_transform_edt(~lungs, sampling=coarse_spacing)
    region = distance_mm <= reach_mm
    lung_ml = float(lungs.sum()) * cell_volume_ml
    log.debug("lung region: %.0f mL of lung, %.0f%% of the volume after dilation", lung_ml, 100 * region.mean())
    return LungRegion(coarse_mask=region, shape_irc=tuple(int(n) for n in hu.shape), lung_volume_ml=lung_ml)  # type: ignore[arg-type]
