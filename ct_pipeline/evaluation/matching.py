"""Which findings hit which nodules, by the LUNA16 challenge's rules.

The rules (those of the challenge's ``noduleCADEvaluationLUNA16.py``):

* Only the scans of the evaluated set count; findings on other series are ignored (with a warning).
* Of a scan with more than ``max_findings_per_scan`` (100) findings, only those with a probability
  strictly above the 101st highest are kept. With ties at the cap this keeps fewer than 100:
  the challenge drops the whole tied group rather than pick among equals.
* A finding hits a nodule when its squared distance to the centre is strictly less than
  (diameter / 2) squared.
* A nodule hit by several findings is detected once, with the highest probability among them;
  the other hits are ignored (neither true nor false positives).
* A finding inside two nodules detects both (the challenge prints a warning and does the same).
* A finding on an excluded annotation (and on no nodule) is ignored.
* Every other finding is a false positive; a nodule no finding hits is missed but still counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ct_pipeline.errors import BadInputError
from ct_pipeline.evaluation.tables import FindingTable, NoduleTable

log = logging.getLogger(__name__)

CHALLENGE_MAX_FINDINGS_PER_SCAN = 100


@dataclass(frozen=True)
class MatchCounts:
    """Where the findings went.

    ``n_read`` = ``n_outside_set`` + ``n_over_cap`` + ``n_scored``. Of the scored findings,
    ``n_on_excluded`` are ignored as irrelevant; ``n_extra_hits`` counts, per detected nodule,
    the hits beyond the best one (ignored, like the challenge's "double detections");
    ``n_on_two_nodules`` findings lie inside more than one nodule.
    """

    n_read: int
    n_outside_set: int
    n_over_cap: int
    n_scored: int
    n_on_excluded: int
    n_extra_hits: int
    n_on_two_nodules: int


@dataclass(frozen=True, eq=False)
class MatchedFindings:
    """The outcome of matching, ready for FROC analysis (and for resampling scans).

    Attributes:
        series_uids: the evaluated scans; ``*_scan`` arrays index into it.
        nodule_scan: (M,) int, scan of each included nodule.
        nodule_diameter_mm: (M,) float64.
        nodule_probability: (M,) float64, probability of the best finding on the nodule, NaN if missed.
        fp_scan: (F,) int, scan of each false positive.
        fp_probability: (F,) float64.
        counts: bookkeeping of all findings read.
    """

    series_uids: tuple[str, ...]
    nodule_scan: np.ndarray
    nodule_diameter_mm: np.ndarray
    nodule_probability: np.ndarray
    fp_scan: np.ndarray
    fp_probability: np.ndarray
    counts: MatchCounts

    @property
    def n_scans(self) -> int:
        return len(self.series_uids)

    @property
    def n_nodules(self) -> int:
        return len(self.nodule_scan)

    @property
    def nodule_detected(self) -> np.ndarray:
        return ~np.isnan(self.nodule_probability)


def _scan_index(series_uid: np.ndarray, scan_of_uid: dict[str, int]) -> np.ndarray:
    return np.fromiter((scan_of_uid.get(uid, -1) for uid in series_uid), dtype=np.int64, count=len(series_uid))


def _cap_per_scan(scan: np.ndarray, probability: np.ndarray, series_uids: tuple[str, ...], cap: int) -> np.ndarray:
    """Boolean mask of the findings kept under the challenge's per-scan cap."""
    n_scans = len(series_uids)
    per_scan = np.bincount(scan, minlength=n_scans)
    if cap <= 0 or per_scan.max(initial=0) <= cap:
        return np.ones(len(scan), dtype=bool)
    order = np.lexsort((-probability, scan))  # by scan, then probability descending
    start = np.concatenate(([0], np.cumsum(per_scan)[:-1]))
    threshold = np.full(n_scans, -np.inf)
    crowded = np.flatnonzero(per_scan > cap)
    threshold[crowded] = probability[order[start[crowded] + cap]]  # the (cap+1)-th highest
    keep = probability > threshold[scan]
    kept_per_scan = np.bincount(scan[keep], minlength=n_scans)
    tied = crowded[kept_per_scan[crowded] < cap]
    if len(tied):
        log.warning(
            "%d scan(s) keep fewer than %d findings because probabilities tie at the cap "
            "(the challenge drops the tied group), e.g. %s keeps %d",
            len(tied),
            cap,
            series_uids[tied[0]],
            int(kept_per_scan[tied[0]]),
        )
    return keep


def _pairs_within(
    finding_scan: np.ndarray,
    finding_xyz: np.ndarray,
    nodule_scan: np.ndarray,
    nodule_xyz: np.ndarray,
    nodule_diameter_mm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(finding index, nodule index) of every hit: same scan, squared distance < (diameter / 2)^2."""
    order = np.argsort(nodule_scan, kind="stable")
    sorted_scan = nodule_scan[order]
    first = np.searchsorted(sorted_scan, finding_scan, side="left")
    n_pairs = np.searchsorted(sorted_scan, finding_scan, side="right") - first
    finding_idx = np.repeat(np.arange(len(finding_scan)), n_pairs)
    pair_start = np.cumsum(n_pairs) - n_pairs
    nodule_idx = order[first[finding_idx] + np.arange(len(finding_idx)) - pair_start[finding_idx]]
    delta = nodule_xyz[nodule_idx] - finding_xyz[finding_idx]
    # Summed in x, y, z order like the challenge's script, so borderline hits agree bit for bit.
    distance2 = delta[:, 0] ** 2 + delta[:, 1] ** 2 + delta[:, 2] ** 2
    hit = distance2 < (nodule_diameter_mm[nodule_idx] / 2.0) ** 2
    return finding_idx[hit], nodule_idx[hit]


def match_findings(
    findings: FindingTable,
    nodules: NoduleTable,
    series_uids: tuple[str, ...],
    excluded: NoduleTable | None = None,
    max_findings_per_scan: int = CHALLENGE_MAX_FINDINGS_PER_SCAN,
) -> MatchedFindings:
    """Match ``findings`` to ``nodules`` of the scans ``series_uids`` (see the module docstring).

    Args:
        findings: all findings; those on series outside ``series_uids`` are ignored.
        nodules: annotated nodules; those on series outside ``series_uids`` are ignored.
        series_uids: the evaluated scans (unique).
        excluded: irrelevant findings whose hits count neither way.
        max_findings_per_scan: the challenge's cap (100); 0 or less keeps all.
    """
    scan_of_uid = {uid: i for i, uid in enumerate(series_uids)}

    finding_scan = _scan_index(findings.series_uid, scan_of_uid)
    inside = finding_scan >= 0
    n_outside = int((~inside).sum())
    if n_outside and n_outside == len(findings):
        raise BadInputError(
            f"none of the {n_outside} findings is on an evaluated scan (e.g. {findings.series_uid[0]} is not among "
            f"the {len(series_uids)} evaluated, such as {series_uids[0] if series_uids else 'none'}); the findings and the "
            "annotations (or --series-file) describe different scans"
        )
    if n_outside:
        outside_uids = sorted(set(findings.series_uid[~inside]))
        log.warning(
            "ignored %d finding(s) on %d series not in the evaluated set, e.g. %s",
            n_outside,
            len(outside_uids),
            outside_uids[0],
        )
    finding_scan = finding_scan[inside]
    finding_xyz = findings.center_xyz[inside]
    finding_probability = findings.probability[inside]
    kept = _cap_per_scan(finding_scan, finding_probability, series_uids, max_findings_per_scan)
    n_over_cap = int((~kept).sum())
    finding_scan, finding_xyz, finding_probability = finding_scan[kept], finding_xyz[kept], finding_probability[kept]
    n_scored = len(finding_scan)

    nodule_scan = _scan_index(nodules.series_uid, scan_of_uid)
    in_set = nodule_scan >= 0
    nodule_scan, nodule_xyz, nodule_diameter_mm = (
        nodule_scan[in_set],
        nodules.center_xyz[in_set],
        nodules.diameter_mm[in_set],
    )

    hit_finding, hit_nodule = _pairs_within(finding_scan, finding_xyz, nodule_scan, nodule_xyz, nodule_diameter_mm)
    best = np.full(len(nodule_scan), -np.inf)
    np.maximum.at(best, hit_nodule, finding_probability[hit_finding])
    hits_per_nodule = np.bincount(hit_nodule, minlength=len(nodule_scan))
    nodule_probability = np.where(hits_per_nodule > 0, best, np.nan)
    hits_per_finding = np.bincount(hit_finding, minlength=n_scored)
    on_nodule = hits_per_finding > 0
    n_on_two = int((hits_per_finding > 1).sum())
    if n_on_two:
        log.warning(
            "%d finding(s) lie inside two or more nodules and detect each of them (as in the challenge)", n_on_two
        )

    on_excluded = np.zeros(n_scored, dtype=bool)
    if excluded is not None and len(excluded):
        excluded_scan = _scan_index(excluded.series_uid, scan_of_uid)
        keep_excluded = excluded_scan >= 0
        hit_finding_ex, _ = _pairs_within(
            finding_scan,
            finding_xyz,
            excluded_scan[keep_excluded],
            excluded.center_xyz[keep_excluded],
            excluded.diameter_mm[keep_excluded],
        )
        on_excluded[hit_finding_ex] = True
        on_excluded &= ~on_nodule
    false_positive = ~on_nodule & ~on_excluded

    counts = MatchCounts(
        n_read=len(findings),
        n_outside_set=n_outside,
        n_over_cap=n_over_cap,
        n_scored=n_scored,
        n_on_excluded=int(on_excluded.sum()),
        n_extra_hits=int(np.maximum(hits_per_nodule - 1, 0).sum()),
        n_on_two_nodules=n_on_two,
    )
    return MatchedFindings(
        series_uids=tuple(series_uids),
        nodule_scan=nodule_scan,
        nodule_diameter_mm=nodule_diameter_mm,
        nodule_probability=nodule_probability,
        fp_scan=finding_scan[false_positive],
        fp_probability=finding_probability[false_positive],
        counts=counts,
    )
