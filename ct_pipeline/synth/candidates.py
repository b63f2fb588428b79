"""A LUNA16-like candidate list: what a nodule detector with high sensitivity would report.

LUNA16's candidates.csv has ~850 candidates per scan, nearly all false: detectors fire on vessel
cross-sections and bifurcations, on the pleura and fissures, on airway walls and, less often,
anywhere. Each nodule has one or more candidates close to its centre (class 1).

Class-1 candidates lie within 0.45 radii of their nodule's centre, so the book's matching rule
(every axis within diameter/4) pairs them. Class-0 candidates keep at least 1.5 radii + 3 mm from
every nodule, so no evaluation counts one as a hit by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ct_pipeline.synth.drawing import lookup, unit_vectors
from ct_pipeline.synth.layout import SeriesLayout
from ct_pipeline.synth.nodules import Nodule
from ct_pipeline.synth.phantom import Phantom, hilum_mm, random_lung_points
from ct_pipeline.synth.vessels import Segment

# Where the false positives come from (shares of the non-nodule candidates).
NEGATIVE_SOURCES = {"vessel": 0.55, "wall": 0.2, "parenchyma": 0.1, "airway": 0.05, "body": 0.1}


@dataclass(frozen=True, eq=False)
class Candidates:
    """Candidate centres in anatomy-frame mm (n, 3), their class (1 = nodule) and source name."""

    centers_mm: np.ndarray
    is_nodule: np.ndarray
    sources: tuple[str, ...]


def _near_vessels(rng: np.random.Generator, segments: list[Segment], n: int) -> np.ndarray:
    if not segments or n <= 0:
        return np.zeros((0, 3))
    starts = np.array([s.start_mm for s in segments])
    ends = np.array([s.end_mm for s in segments])
    radii = np.array([s.start_radius_mm for s in segments])
    chosen = rng.choice(len(segments), size=n, p=radii / radii.sum())  # thicker vessels fool detectors more
    # Half at bifurcations (segment ends), half along the vessel.
    t = np.where(rng.uniform(size=n) < 0.5, 1.0, rng.uniform(size=n))[:, None]
    points = starts[chosen] + t * (ends[chosen] - starts[chosen])
    return points + rng.normal(size=(n, 3)) * (0.3 * radii[chosen])[:, None]


def _near_wall(rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout, n: int) -> np.ndarray:
    starts = random_lung_points(rng, phantom, layout, n)
    if len(starts) == 0:
        return starts
    angles = rng.uniform(0.0, 2 * np.pi, len(starts))
    directions = np.column_stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)])
    steps = np.arange(1, 300) * (0.5 * min(layout.spacing_xyz))
    paths = starts[:, None, :] + steps[None, :, None] * directions[:, None, :]
    in_lung = lookup(phantom.lung_mask, layout, paths)
    leaves = ~in_lung.all(axis=1)
    first_out = np.argmin(in_lung, axis=1)
    last_in = steps[np.maximum(first_out - 1, 0)] * (first_out > 0)
    inward = rng.uniform(0.0, 3.0, len(starts))  # a little inside the pleura, like a detector's blob centre
    points = starts + (last_in - inward)[:, None] * directions
    return points[leaves]


def _near_airways(rng: np.random.Generator, phantom: Phantom, n: int) -> np.ndarray:
    anatomy = phantom.anatomy
    tx, ty, tr = anatomy.trachea_xyr_mm
    carina = np.array([tx, ty + 4.0, anatomy.carina_z_mm])
    hila = [hilum_mm(anatomy, lung) for lung in anatomy.lungs]
    which = rng.integers(0, 2, n)
    t = rng.uniform(0.2, 1.0, n)[:, None]
    ends = np.array(hila)[which]
    return carina + t * (ends - carina) + unit_vectors(rng, n) * (0.6 * tr)


def _in_body(rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout, n: int) -> np.ndarray:
    ax, ay = phantom.anatomy.body_axes_mm
    radius = np.sqrt(rng.uniform(0.0, 0.8, n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    z = rng.uniform(*layout.slice_z_range_mm, n)
    return np.column_stack([ax * radius * np.cos(angle), ay * radius * np.sin(angle), z])


def make_candidates(
    rng: np.random.Generator,
    phantom: Phantom,
    layout: SeriesLayout,
    segments: list[Segment],
    nodules: list[Nodule],
    n_negative: int,
) -> Candidates:
    """Positives near each nodule plus ``n_negative`` false candidates, in shuffled order."""
    positives = []
    for nodule in nodules:
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        offsets = unit_vectors(rng, count) * rng.uniform(0.0, 0.45 * nodule.radius_mm, (count, 1))
        positives.append(np.array(nodule.center_mm) + offsets)

    wanted = {name: int(round(share * n_negative * 1.3)) + 2 for name, share in NEGATIVE_SOURCES.items()}
    drawn = {
        "vessel": _near_vessels(rng, segments, wanted["vessel"]),
        "wall": _near_wall(rng, phantom, layout, wanted["wall"]),
        "parenchyma": random_lung_points(rng, phantom, layout, wanted["parenchyma"]),
        "airway": _near_airways(rng, phantom, wanted["airway"]),
        "body": _in_body(rng, phantom, layout, wanted["body"]),
    }
    names = [name for name, points in drawn.items() for _ in range(len(points))]
    negatives = np.vstack([points.reshape(-1, 3) for points in drawn.values()])
    keep = _on_grid(layout, negatives)
    for nodule in nodules:
        clearance = max(1.5 * nodule.max_radius_mm, nodule.max_radius_mm + 3.0)
        keep &= np.linalg.norm(negatives - np.array(nodule.center_mm), axis=1) > clearance
    kept = np.flatnonzero(keep)
    # Take the requested number with the sources' shares, as far as each source delivered.
    kept = rng.permutation(kept)[:n_negative]
    negatives, names = negatives[kept], [names[i] for i in kept]

    centers = np.vstack([*positives, negatives]) if positives else negatives
    is_nodule = np.concatenate(
        [np.ones(sum(len(p) for p in positives), dtype=bool), np.zeros(len(negatives), dtype=bool)]
    )
    sources = ["nodule"] * int(is_nodule.sum()) + names
    order = rng.permutation(len(centers))
    return Candidates(centers_mm=centers[order], is_nodule=is_nodule[order], sources=tuple(sources[i] for i in order))


def _on_grid(layout: SeriesLayout, points_mm: np.ndarray) -> np.ndarray:
    irc = layout.anatomy_mm_to_canonical_irc(points_mm)
    return np.all((irc >= 0) & (irc <= np.asarray(layout.shape_irc) - 1), axis=1)
