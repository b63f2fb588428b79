"""Pulmonary vessel trees: tapering tubes that branch from each hilum out to the lung surface.

Vessels matter because they are where real candidate detectors fire most: a vessel seen in
cross-section or at a bifurcation looks like a small nodule on one slice.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ct_pipeline.synth.drawing import draw_tube, lookup
from ct_pipeline.synth.layout import SeriesLayout
from ct_pipeline.synth.phantom import Phantom, hilum_mm
from ct_pipeline.synth.style import STANDARD, SynthStyle, min_vessel_radius_mm

_MAX_SEGMENTS_PER_LUNG = 4000


@dataclass(frozen=True)
class Segment:
    """One straight piece of vessel, anatomy-frame mm."""

    start_mm: tuple[float, float, float]
    end_mm: tuple[float, float, float]
    start_radius_mm: float
    end_radius_mm: float


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross costs ~100 us per call on 3-vectors (axis juggling); this is ~2 us.
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])), 1e-9)


def _rotate(vector: np.ndarray, axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' rotation of ``vector`` about unit ``axis``."""
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    return vector * cos + _cross(axis, vector) * sin + axis * (float(axis @ vector) * (1.0 - cos))


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    return _unit(_cross(d, rng.normal(size=3)))


def _room_ahead(phantom: Phantom, layout: SeriesLayout, start: np.ndarray, direction: np.ndarray) -> float:
    """mm of lung ahead of ``start`` along ``direction`` (leading non-lung, e.g. the hilum, skipped)."""
    steps = np.arange(1, 126) * 2.0
    inside = lookup(phantom.lung_mask, layout, start + np.outer(steps, direction))
    if not inside.any():
        return 0.0
    entered = int(np.argmax(inside))
    left = inside[entered:]
    return float(steps[entered + int(np.argmin(left))] if not left.all() else steps[-1])


def _roots(rng: np.random.Generator, phantom: Phantom, side: float) -> list[tuple[np.ndarray, np.ndarray, float, int]]:
    """Trunks leaving a hilum: arteries fan out from it, veins from a point lower and in front."""
    lung = next(lung for lung in phantom.anatomy.lungs if lung.side == side)
    artery_hilum = hilum_mm(phantom.anatomy, lung)
    vein_hilum = artery_hilum + np.array([0.0, -12.0, -20.0])
    s = side
    arteries = [
        (s * 0.5, 0.0, 1.0),
        (s, -0.4, 0.35),
        (s, 0.4, 0.1),
        (s, -0.3, -0.4),
        (s * 0.6, -0.5, -0.9),
        (s * 0.6, 0.6, -0.8),
        (s * 0.4, 0.9, 0.3),
    ]
    veins = [
        (s * 0.6, -0.3, 0.8),
        (s, 0.1, 0.2),
        (s, -0.5, -0.2),
        (s * 0.5, 0.5, -0.9),
        (s * 0.8, 0.8, 0.0),
        (s * 0.5, -0.7, -0.7),
    ]
    return [
        (origin, _unit(np.array(d) + rng.normal(scale=0.15, size=3)), float(rng.uniform(3.0, 5.5)), 0)
        for origin, directions in ((artery_hilum, arteries), (vein_hilum, veins))
        for d in directions
    ]


def grow_vessel_trees(
    rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout, style: SynthStyle = STANDARD
) -> list[Segment]:
    """Branch trees from both hila until the vessels get thinner than the grid can show.

    Each segment runs 30-50 % of the way to the lung wall ahead (at most 15 radii); at its end it
    splits into two thinner children (Murray-like radius ratios), turned apart and bent outward
    from the hilum, and most segments also give off a thin side branch. A branch with
    less than 4 mm of lung ahead ends.
    """
    min_radius = min_vessel_radius_mm(style, layout)
    segments: list[Segment] = []
    for side in (-1, 1):
        hilum = hilum_mm(phantom.anatomy, next(lung for lung in phantom.anatomy.lungs if lung.side == side))
        queue = deque(_roots(rng, phantom, side))
        n_lung = 0
        # Breadth first, so that the segment cap trims the finest generation everywhere alike.
        while queue and n_lung < _MAX_SEGMENTS_PER_LUNG:
            start, direction, radius, depth = queue.popleft()
            room = _room_ahead(phantom, layout, start, direction)
            if room < 4.0:
                continue
            # A fraction of the way to the pleura: trees fill the lung whatever its size.
            length = min(rng.uniform(0.3, 0.5) * room, 15.0 * radius)
            end = start + direction * length
            end_radius = radius * 0.92
            segments.append(Segment(tuple(start), tuple(end), float(radius), float(end_radius)))  # type: ignore[arg-type]
            n_lung += 1
            outward = _unit(end - hilum)
            axis = _perpendicular(rng, direction)
            children = [
                (end, rng.uniform(0.78, 0.9), rng.uniform(12, 30)),
                (end, rng.uniform(0.55, 0.75), -rng.uniform(25, 50)),
            ]
            if rng.uniform() < style.side_branch_probability:
                children.append(((start + end) / 2, rng.uniform(0.35, 0.55), rng.choice([-1, 1]) * rng.uniform(50, 80)))
            for origin, ratio, angle_deg in children:
                child_radius = end_radius * ratio
                if child_radius >= min_radius:
                    child = _unit(_rotate(direction, axis, math.radians(angle_deg)) + 0.3 * outward)
                    queue.append((origin, child, child_radius, depth + 1))
                axis = _perpendicular(rng, direction)  # side branches leave in any plane
    return segments


def draw_vessels(volume: np.ndarray, layout: SeriesLayout, phantom: Phantom, segments: list[Segment]) -> None:
    """Blend the segments into ``volume`` as blood (soft-edged), only inside the lungs."""
    blood = phantom.anatomy.hu["blood"]
    for seg in segments:
        draw_tube(
            volume,
            layout,
            np.array(seg.start_mm),
            np.array(seg.end_mm),
            seg.start_radius_mm,
            seg.end_radius_mm,
            blood,
            limit=phantom.lung_mask,
        )
