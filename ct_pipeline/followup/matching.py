"""Pairing the nodules of two scans in the registered frame, and how much each one grew.

Each CURRENT nodule is mapped into PRIOR's frame by the registration; pairs are chosen to
minimise the total distance (Hungarian assignment), and a pair is only allowed when its centres
lie within ``max_distance_mm`` or within half the larger nodule's diameter. What is left over is
new (CURRENT only) or vanished (PRIOR only) -- or missed by the detector in the other scan.

Volume doubling time (days) = interval * ln 2 / ln(V_current / V_prior), the figure screening
guidelines use for growing solid nodules; it is not given for nodules that did not grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ct_pipeline.diagnosis.result import Finding


@dataclass(frozen=True)
class MatchConfig:
    """``max_distance_mm``: centres (after registration) further apart never pair, unless
    within half the larger nodule's diameter."""

    max_distance_mm: float = 10.0


@dataclass(frozen=True)
class NodulePair:
    """One nodule seen in both scans.

    Attributes:
        prior / current: the findings (rank ``prior_rank`` / ``current_rank`` among each scan's
            nodules, 1-based).
        current_in_prior_xyz: the current centre mapped into PRIOR's patient frame, mm.
        distance_mm: from the prior centre to that point.
        volume_change_pct: 100 * (V_current / V_prior - 1); None without both volumes.
        doubling_time_days: None without an interval, or when it did not grow.
        level_hu: the HU level both scans' outlines were cut at
            (:mod:`~ct_pipeline.followup.volumes`); None: each at its own (as recorded).
    """

    prior: Finding
    current: Finding
    prior_rank: int
    current_rank: int
    current_in_prior_xyz: tuple[float, float, float]
    distance_mm: float
    volume_change_pct: float | None
    doubling_time_days: float | None
    level_hu: float | None = None


def finding_volume_mm3(finding: Finding) -> float | None:
    """The outline's volume (:mod:`~ct_pipeline.diagnosis.volumetry`), or None if not measured."""
    return None if finding.measurement is None else float(finding.measurement.volume_mm3)


def volume_change_pct(prior_mm3: float | None, current_mm3: float | None) -> float | None:
    if prior_mm3 is None or current_mm3 is None or prior_mm3 <= 0:
        return None
    return 100.0 * (current_mm3 / prior_mm3 - 1.0)


def doubling_time_days(prior_mm3: float | None, current_mm3: float | None, interval_days: float | None) -> float | None:
    """interval * ln 2 / ln(V2 / V1); None without an interval or volumes, or without growth."""
    if interval_days is None or interval_days <= 0 or prior_mm3 is None or current_mm3 is None:
        return None
    if prior_mm3 <= 0 or current_mm3 <= prior_mm3:
        return None
    return interval_days * math.log(2.0) / math.log(current_mm3 / prior_mm3)


def match_nodules(
    prior: list[Finding],
    current: list[Finding],
    current_to_prior,
    interval_days: float | None = None,
    config: MatchConfig = MatchConfig(),
) -> tuple[list[NodulePair], list[int], list[int]]:
    """Pair ``prior`` and ``current`` nodules.

    Args:
        prior / current: each scan's nodules, most probable first.
        current_to_prior: maps CURRENT patient points (n, 3) into PRIOR's frame.
        interval_days: between the scans, for the doubling time.

    Returns:
        (pairs in prior order, indices of vanished prior nodules, indices of new current ones).
    """
    from scipy.optimize import linear_sum_assignment

    if not prior or not current:
        return [], list(range(len(prior))), list(range(len(current)))
    prior_xyz = np.array([f.center_xyz for f in prior], dtype=np.float64)
    mapped = np.asarray(current_to_prior(np.array([f.center_xyz for f in current], dtype=np.float64)))
    distance = np.linalg.norm(prior_xyz[:, None, :] - mapped[None, :, :], axis=2)
    larger = np.maximum.outer(np.array([f.diameter_mm for f in prior]), np.array([f.diameter_mm for f in current]))
    allowed = (distance <= config.max_distance_mm) | (distance <= larger / 2.0)
    cost = np.where(allowed, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    pairs = []
    for i, j in sorted((int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j]):
        v1, v2 = finding_volume_mm3(prior[i]), finding_volume_mm3(current[j])
        pairs.append(
            NodulePair(
                prior=prior[i],
                current=current[j],
                prior_rank=i + 1,
                current_rank=j + 1,
                current_in_prior_xyz=tuple(float(v) for v in mapped[j]),  # type: ignore[arg-type]
                distance_mm=float(distance[i, j]),
                volume_change_pct=volume_change_pct(v1, v2),
                doubling_time_days=doubling_time_days(v1, v2, interval_days),
            )
        )
    matched_prior = {p.prior_rank - 1 for p in pairs}
    matched_current = {p.current_rank - 1 for p in pairs}
    vanished = [i for i in range(len(prior)) if i not in matched_prior]
    new = [j for j in range(len(current)) if j not in matched_current]
    return pairs, vanished, new
