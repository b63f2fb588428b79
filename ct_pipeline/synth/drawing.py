"""Drawing into the canonical volume: local windows, tubes, and lookups in anatomy-frame mm.

Everything here touches only the voxels of a small bounding box, so drawing a few thousand
vessel segments costs about as much as one pass over the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ct_pipeline.synth.layout import AnatomyMm, SeriesLayout


@dataclass(frozen=True)
class Window:
    """A box of the canonical volume and the anatomy-frame mm of its voxel centres.

    ``x_mm``, ``y_mm``, ``z_mm`` broadcast against each other to the box's (index, row, col) shape.
    """

    slices: tuple[slice, slice, slice]
    x_mm: np.ndarray  # (1, 1, cols)
    y_mm: np.ndarray  # (1, rows, 1)
    z_mm: np.ndarray  # (index, 1, 1)


def axis_mm(layout: SeriesLayout, axis_irc: int, start: int, stop: int) -> np.ndarray:
    """Anatomy-frame mm of canonical voxel centres ``start..stop-1`` along array axis ``axis_irc``."""
    spacing = layout.spacing_xyz[2 - axis_irc]
    center = layout.body_center_mm[2 - axis_irc]
    return (np.arange(start, stop, dtype=np.float32) * np.float32(spacing) - np.float32(center)).astype(np.float32)


def window(layout: SeriesLayout, low_mm: AnatomyMm, high_mm: AnatomyMm) -> Window | None:
    """The canonical voxels whose centres may lie in the mm box, or None when it is off the grid."""
    low_irc = np.floor(layout.anatomy_mm_to_canonical_irc(np.asarray(low_mm))).astype(int)
    high_irc = np.ceil(layout.anatomy_mm_to_canonical_irc(np.asarray(high_mm))).astype(int) + 1
    starts = np.maximum(low_irc, 0)
    stops = np.minimum(high_irc, layout.shape_irc)
    if np.any(stops <= starts):
        return None
    slices = tuple(slice(int(a), int(b)) for a, b in zip(starts, stops))
    return Window(
        slices=slices,  # type: ignore[arg-type]
        x_mm=axis_mm(layout, 2, starts[2], stops[2])[None, None, :],
        y_mm=axis_mm(layout, 1, starts[1], stops[1])[None, :, None],
        z_mm=axis_mm(layout, 0, starts[0], stops[0])[:, None, None],
    )


def partial_volume_mm(layout: SeriesLayout) -> float:
    """Width of the soft edge given to drawn objects: the voxel's geometric-mean size."""
    return float(np.prod(layout.spacing_xyz) ** (1.0 / 3.0))


def blend(volume: np.ndarray, win: Window, fraction: np.ndarray, value_hu: float, limit: np.ndarray | None) -> None:
    """``volume[win] += (value_hu - volume[win]) * fraction``, only where ``limit[win]`` (if given) is True."""
    box = volume[win.slices]
    if limit is not None:
        fraction = fraction * limit[win.slices]
    box += (np.float32(value_hu) - box) * fraction


def tube_fraction(
    win: Window, p0_mm: np.ndarray, p1_mm: np.ndarray, r0_mm: float, r1_mm: float, edge_mm: float
) -> np.ndarray:
    """Share of each window voxel inside the tapered tube p0->p1 (radii r0->r1), soft edge ``edge_mm`` wide."""
    p0 = np.asarray(p0_mm, dtype=np.float32)
    v = np.asarray(p1_mm, dtype=np.float32) - p0
    length_sq = max(float(v @ v), 1e-6)
    wx, wy, wz = win.x_mm - p0[0], win.y_mm - p0[1], win.z_mm - p0[2]
    along = wx * v[0] + wy * v[1] + wz * v[2]  # (w . v), broadcast to the box
    t = np.clip(along / np.float32(length_sq), 0.0, 1.0)
    dist_sq = (wx * wx + wy * wy + wz * wz) - 2.0 * t * along + t * t * np.float32(length_sq)
    dist = np.sqrt(np.maximum(dist_sq, 0.0))
    radius = np.float32(r0_mm) + t * np.float32(r1_mm - r0_mm)
    return np.clip((radius - dist) / np.float32(edge_mm) + 0.5, 0.0, 1.0)


def draw_tube(
    volume: np.ndarray,
    layout: SeriesLayout,
    p0_mm: np.ndarray,
    p1_mm: np.ndarray,
    r0_mm: float,
    r1_mm: float,
    value_hu: float,
    limit: np.ndarray | None = None,
) -> None:
    """Blend a tapered tube (anatomy-frame mm) into the canonical float32 ``volume``."""
    edge = partial_volume_mm(layout)
    pad = max(r0_mm, r1_mm) + edge
    p0, p1 = np.asarray(p0_mm, dtype=np.float64), np.asarray(p1_mm, dtype=np.float64)
    win = window(layout, np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if win is None:
        return
    blend(volume, win, tube_fraction(win, p0, p1, r0_mm, r1_mm, edge), value_hu, limit)


def lookup(mask: np.ndarray, layout: SeriesLayout, points_mm: AnatomyMm) -> np.ndarray:
    """``mask`` at the nearest canonical voxel of each point (N, 3); False off the grid."""
    irc = np.rint(layout.anatomy_mm_to_canonical_irc(np.asarray(points_mm, dtype=np.float64))).astype(np.int64)
    irc = irc.reshape(-1, 3)
    inside = np.all((irc >= 0) & (irc < np.asarray(layout.shape_irc)), axis=1)
    result = np.zeros(len(irc), dtype=bool)
    good = irc[inside]
    result[inside] = mask[good[:, 0], good[:, 1], good[:, 2]]
    return result.reshape(np.shape(points_mm)[:-1])


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random directions, uniform on the sphere, shape (n, 3)."""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
