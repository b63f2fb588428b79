"""``ct compare`` against the truth of ``ct synth --follow-up``: was each nodule paired, and how
close is the measured volume change to the true one?

A true nodule is found in a scan by a nodule finding whose centre lies within its radius (at
least 3 mm); it counts as matched when the pair ``ct compare`` made holds both of those
findings. ``error_pp`` is measured minus true volume change, in percentage points.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ct_pipeline.followup.comparison import Comparison

MIN_REACH_MM = 3.0


@dataclass(frozen=True)
class FollowUpOutcome:
    """One true nodule of a pair of scans.

    Attributes:
        status: its truth ("grown", "stable", "shrunk", "vanished", "new").
        diameter_mm: the larger of its two diameters.
        found_prior / found_current: a nodule finding at its place in that scan.
        matched: ``ct compare`` paired those two findings (grown, stable, shrunk only).
        true_change_pct / measured_change_pct / error_pp: volume changes and their difference.
    """

    prior_uid: str
    status: str
    diameter_mm: float
    found_prior: bool
    found_current: bool
    matched: bool
    true_change_pct: float | None
    measured_change_pct: float | None

    @property
    def error_pp(self) -> float | None:
        if self.true_change_pct is None or self.measured_change_pct is None:
            return None
        return self.measured_change_pct - self.true_change_pct


def read_follow_up_truth(data_root: Path) -> list[dict[str, str]]:
    """The rows of ``followup_truth.csv`` (every value a string; "" where a scan lacks the nodule)."""
    with open(Path(data_root) / "followup_truth.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def truth_point(row: dict[str, str], when: str) -> np.ndarray | None:
    """A truth row's centre in scan ``when`` ("prior" or "current"), patient mm; None if the nodule is not in it."""
    values = [row[f"{when}_coord{axis}"] for axis in "XYZ"]
    return None if "" in values else np.array([float(v) for v in values])


def _nearest(findings, point: np.ndarray | None, reach_mm: float):
    """The finding (from ``(rank, finding)`` pairs) nearest ``point`` within ``reach_mm``, or None."""
    if point is None:
        return None
    near = [(float(np.linalg.norm(np.asarray(f.center_xyz) - point)), rank) for rank, f in findings]
    near = [item for item in near if item[0] <= reach_mm]
    return min(near)[1] if near else None


def score_comparison(comparison: Comparison, truth: list[dict[str, str]]) -> list[FollowUpOutcome]:
    """One outcome per true nodule of ``comparison``'s pair of scans (``truth``: the rows of
    :func:`read_follow_up_truth`; other pairs' rows are skipped)."""
    pairs = {(p.prior_rank, p.current_rank): p for p in comparison.pairs}
    # Every nodule of each scan is in a pair or left over, with its rank.
    prior_ranked = [(p.prior_rank, p.prior) for p in comparison.pairs] + list(comparison.vanished)
    current_ranked = [(p.current_rank, p.current) for p in comparison.pairs] + list(comparison.new)
    outcomes = []
    for row in truth:
        if row["prior_seriesuid"] != comparison.prior.series_uid:
            continue
        diameters = [float(row[k]) for k in ("prior_diameter_mm", "current_diameter_mm") if row[k]]
        reach = max(MIN_REACH_MM, max(diameters) / 2.0)
        prior_rank = _nearest(prior_ranked, truth_point(row, "prior"), reach)
        current_rank = _nearest(current_ranked, truth_point(row, "current"), reach)
        pair = pairs.get((prior_rank, current_rank))
        true_change = (
            float(row["volume_change_pct"]) if row["volume_change_pct"] and row["status"] != "vanished" else None
        )
        outcomes.append(
            FollowUpOutcome(
                prior_uid=row["prior_seriesuid"],
                status=row["status"],
                diameter_mm=max(diameters),
                found_prior=prior_rank is not None,
                found_current=current_rank is not None,
                matched=pair is not None,
                true_change_pct=true_change,
                measured_change_pct=None if pair is None else pair.volume_change_pct,
            )
        )
    return outcomes
