"""Nodules: how many, how big, what kind, where, how malignant, and their voxels.

Sizes follow LUNA16's annotations (log-normal, median about 6.5 mm, 3-30 mm). Malignancy rises
steeply with diameter (as in LUNA16's malignancy table: ~2 % below 5 mm, ~60 % at 8-12 mm,
~90 % above 12 mm; ~31 % overall, more on small grids, where tiny nodules cannot be drawn) and
with irregularity, which is drawn into the image as lobulation and spicules, so a model can
learn it from the pixels. Four "readers" rate each nodule 1-5 like
LIDC radiologists; ``is_malignant`` is True when their mean rating is above 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ct_pipeline.synth.drawing import draw_tube, lookup, partial_volume_mm, unit_vectors, window
from ct_pipeline.synth.layout import SeriesLayout
from ct_pipeline.synth.phantom import Phantom, random_lung_points

NoduleKind = Literal["solid", "part-solid", "ground-glass"]
MAX_DIAMETER_MM = 30.0
# A nodule must be wider than this many of the grid's largest voxel spacings, or its centre
# voxel would be mostly partial volume (small grids: 2.2-4.5 mm voxels).
MIN_DIAMETER_IN_VOXELS = 1.6
_COUNT_PROBABILITIES = (0.08, 0.37, 0.30, 0.15, 0.10)  # 0, 1, 2, 3, 4 nodules per series


@dataclass(frozen=True)
class Nodule:
    """One nodule in anatomy-frame mm.

    Attributes:
        center_mm: centre (x, y, z).
        diameter_mm: nominal diameter (twice the base radius; for part-solid ones, of the halo).
        max_radius_mm: furthest extent of the lobulated surface (spicules excluded).
        kind: "solid", "part-solid" (ground-glass halo around a solid core) or "ground-glass"
            (the halo alone; ``ct synth --style site-b`` only).
        juxtapleural: touches the lung wall.
        irregularity: 0 (smooth sphere) .. 1 (lobulated and spiculated).
        ratings: malignancy ratings 1-5 of 3-4 simulated readers.
        is_malignant: mean rating above 3.
    """

    center_mm: tuple[float, float, float]
    diameter_mm: float
    max_radius_mm: float
    kind: NoduleKind
    juxtapleural: bool
    irregularity: float
    ratings: tuple[int, ...]
    is_malignant: bool
    solid_hu: float
    ground_glass_hu: float
    core_fraction: float
    lobes: tuple[tuple[float, float, float, float, float], ...]  # (ux, uy, uz, amplitude, sharpness)
    spicules: tuple[tuple[float, float, float, float], ...]  # (ux, uy, uz, length as radii)

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0


def _diameter(rng: np.random.Generator, min_mm: float) -> float:
    for _ in range(1000):
        d = float(rng.lognormal(math.log(6.5), 0.5))
        if min_mm <= d <= MAX_DIAMETER_MM:
            return d
    return min_mm


def _malignancy(
    rng: np.random.Generator, diameter_mm: float, irregularity: float, part_solid: bool
) -> tuple[tuple[int, ...], bool]:
    # Calibrated on LUNA16's table: malignant share ~2 % / 13 % / 64 % / 95 % for nodules of
    # <5, 5-8, 8-12, 12-20 mm and ~31 % overall (the real one: 2 / 12 / 60 / 91 %, 32 %).
    logit = 4.0 * (math.log(diameter_mm) - math.log(9.0)) + 2.0 * (irregularity - 0.3) + (0.6 if part_solid else 0.0)
    logit += rng.normal(0.0, 1.0)  # what the pixels do not tell
    probability = 1.0 / (1.0 + math.exp(-logit))
    n_readers = int(rng.choice([3, 4], p=[0.35, 0.65]))
    center = 1.0 + 4.0 * probability + rng.normal(0.0, 0.3)
    ratings = tuple(int(np.clip(round(center + rng.normal(0.0, 0.6)), 1, 5)) for _ in range(n_readers))
    return ratings, float(np.mean(ratings)) > 3.0


def _fits(phantom: Phantom, layout: SeriesLayout, center: np.ndarray, radius: float) -> bool:
    """Centre and 26 points on the sphere (cube-neighbour directions) all in the lung."""
    offsets = np.array(
        [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)]
    )
    directions = offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    probes = np.vstack([center, center + directions * radius])
    return bool(lookup(phantom.lung_mask, layout, probes).all())


def _wall_point(
    rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """March from ``inside`` in a random horizontal direction to the last lung voxel: (point, direction)."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    direction = np.array([math.cos(angle), math.sin(angle), 0.0])
    step = 0.5 * min(layout.spacing_xyz)
    path = inside + np.outer(np.arange(1, 400) * step, direction)
    in_lung = lookup(phantom.lung_mask, layout, path)
    if in_lung.all():
        return None
    first_out = int(np.argmin(in_lung))
    return (path[first_out - 1] if first_out > 0 else inside), direction


def place_center(
    rng: np.random.Generator,
    phantom: Phantom,
    layout: SeriesLayout,
    radius: float,
    juxtapleural: bool,
    taken: list[Nodule],
) -> np.ndarray | None:
    """A nodule centre inside the lung, clear of other nodules; None if none found in 300 tries."""
    for _ in range(300):
        points = random_lung_points(rng, phantom, layout, 1, margin_z_mm=radius + 2.0)
        if len(points) == 0:
            return None
        point = points[0]
        if juxtapleural:
            wall = _wall_point(rng, phantom, layout, point)
            if wall is None:
                continue
            edge, direction = wall
            point = edge - direction * 0.45 * radius  # about half the nodule inside the wall
            ok = _fits(phantom, layout, point - direction * 0.5 * radius, 0.45 * radius)
        else:
            ok = _fits(phantom, layout, point, radius + 2.0)
        if ok and clear_of(point, radius, taken):
            return point
    return None


def clear_of(point: np.ndarray, radius: float, taken: list[Nodule]) -> bool:
    """A nodule of ``radius`` at ``point`` keeps 4 mm from every nodule in ``taken``."""
    return all(np.linalg.norm(point - np.array(n.center_mm)) > radius + n.max_radius_mm + 4.0 for n in taken)


def fits_in_lung(phantom: Phantom, layout: SeriesLayout, point: np.ndarray, radius: float, taken: list[Nodule]) -> bool:
    """A free-standing nodule of ``radius`` at ``point`` lies in the lung, clear of ``taken``."""
    return _fits(phantom, layout, point, radius + 2.0) and clear_of(point, radius, taken)


def sample_nodules(rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout) -> list[Nodule]:
    """0-4 nodules for one series, placed in its lungs."""
    n_nodules = int(rng.choice(len(_COUNT_PROBABILITIES), p=_COUNT_PROBABILITIES))
    min_diameter = max(3.0, MIN_DIAMETER_IN_VOXELS * max(layout.spacing_xyz))
    nodules: list[Nodule] = []
    for _ in range(n_nodules):
        diameter = _diameter(rng, min_diameter)
        radius = diameter / 2
        part_solid = diameter >= 8.0 and rng.uniform() < 0.3
        irregularity = float(np.clip(rng.beta(1.5, 3.0) + 0.12 * math.log(diameter / 6.0), 0.0, 1.0))
        juxtapleural = bool(rng.uniform() < 0.25)
        n_lobes = int(rng.integers(3, 7))
        lobes = tuple(
            (
                *(float(v) for v in unit_vectors(rng, 1)[0]),
                float(rng.uniform(-0.1, 0.5) * irregularity),
                float(rng.uniform(4.0, 12.0)),
            )
            for _ in range(n_lobes)
        )
        n_spicules = int(rng.poisson(14.0 * irregularity**2)) if diameter >= 6.0 else 0
        spicules = tuple(
            (*(float(v) for v in unit_vectors(rng, 1)[0]), float(rng.uniform(0.5, 1.3))) for _ in range(n_spicules)
        )
        max_radius = radius * (1.0 + sum(max(lobe[3], 0.0) for lobe in lobes))
        center = place_center(rng, phantom, layout, max_radius, juxtapleural, nodules)
        if center is None:
            continue
        ratings, malignant = _malignancy(rng, diameter, irregularity, part_solid)
        nodules.append(
            Nodule(
                center_mm=tuple(float(v) for v in center),  # type: ignore[arg-type]
                diameter_mm=float(diameter),
                max_radius_mm=float(max_radius),
                kind="part-solid" if part_solid else "solid",
                juxtapleural=juxtapleural,
                irregularity=irregularity,
                ratings=ratings,
                is_malignant=malignant,
                solid_hu=float(rng.uniform(10.0, 60.0)),
                ground_glass_hu=float(rng.uniform(-620.0, -450.0)),
                core_fraction=float(rng.uniform(0.3, 0.55)),
                lobes=lobes,
                spicules=spicules,
            )
        )
    return nodules


def shape_volume_mm3(nodule: Nodule, n_directions: int = 20_000) -> float:
    """Volume (mm^3) inside the nodule's lobulated surface (the halo's, for part-solid ones;
    spicules excluded): the integral of R(u)^3 / 3 over the directions u, on a Fibonacci sphere."""
    k = np.arange(n_directions) + 0.5
    z = 1.0 - 2.0 * k / n_directions
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    ring = np.sqrt(1.0 - z * z)
    directions = np.stack([ring * np.cos(phi), ring * np.sin(phi), z], axis=1)
    relief = np.zeros(n_directions)
    for ux, uy, uz, amplitude, sharpness in nodule.lobes:
        relief += amplitude * np.exp(sharpness * (directions @ np.array([ux, uy, uz]) - 1.0))
    radius = nodule.radius_mm * (1.0 + relief)
    return float(4.0 * math.pi * np.mean(radius**3) / 3.0)


def _fraction(nodule: Nodule, win, radius_scale: float, edge_mm: float) -> np.ndarray:
    """Share of each window voxel inside the lobulated surface scaled by ``radius_scale``."""
    cx, cy, cz = nodule.center_mm
    wx, wy, wz = win.x_mm - np.float32(cx), win.y_mm - np.float32(cy), win.z_mm - np.float32(cz)
    rho = np.sqrt(wx * wx + wy * wy + wz * wz)
    inv_rho = 1.0 / np.maximum(rho, 1e-3)
    relief = np.zeros_like(rho)
    for ux, uy, uz, amplitude, sharpness in nodule.lobes:
        cosine = (wx * np.float32(ux) + wy * np.float32(uy) + wz * np.float32(uz)) * inv_rho
        relief += np.float32(amplitude) * np.exp(np.float32(sharpness) * (cosine - 1.0))
    surface = np.float32(nodule.radius_mm * radius_scale) * (1.0 + relief)
    return np.clip((surface - rho) / np.float32(edge_mm) + 0.5, 0.0, 1.0)


def draw_nodules(volume: np.ndarray, layout: SeriesLayout, phantom: Phantom, nodules: list[Nodule]) -> None:
    """Blend the nodules into ``volume``: halo (lung only), solid part (never over bone), spicules."""
    edge = partial_volume_mm(layout)
    for nodule in nodules:
        center = np.array(nodule.center_mm)
        pad = nodule.max_radius_mm + edge
        win = window(layout, center - pad, center + pad)
        if win is None:
            continue
        box = volume[win.slices]
        lung = phantom.lung_mask[win.slices]
        if nodule.kind in ("part-solid", "ground-glass"):
            halo = _fraction(nodule, win, 1.0, edge) * lung
            box += (np.float32(nodule.ground_glass_hu) - box) * halo
            if nodule.kind == "ground-glass":
                continue
            solid = _fraction(nodule, win, nodule.core_fraction, edge)
        else:
            solid = _fraction(nodule, win, 1.0, edge)
        solid *= box < 150.0  # a juxtapleural nodule abuts a rib, it does not replace it
        box += (np.float32(nodule.solid_hu) - box) * solid
        for ux, uy, uz, length in nodule.spicules:
            u = np.array([ux, uy, uz])
            start = center + u * nodule.radius_mm * 0.8
            end = center + u * nodule.radius_mm * (1.0 + length)
            draw_tube(volume, layout, start, end, 0.9, 0.3, nodule.solid_hu, limit=phantom.lung_mask)
