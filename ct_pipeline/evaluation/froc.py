"""LUNA16 FROC analysis: CPM, sensitivities at 1/8 ... 8 false positives per scan, intervals, size groups.

``evaluate_froc`` matches findings to nodules (:mod:`.matching`), builds the curve
(:mod:`.curve`), reads the sensitivity at the seven false-positive rates and averages them
into the CPM (the competition performance metric), and bootstraps 95% intervals (:mod:`.bootstrap`).
The numbers equal those of the challenge's ``noduleCADEvaluationLUNA16.py`` (checked to the
bit on random cases with ties, caps, double hits and excluded findings); where the script
gives NaN (no nodule detected) they are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation.bootstrap import NoduleGroup, bootstrap_sensitivity, percentile_interval, resample_counts
from ct_pipeline.evaluation.curve import LUNA16_FP_RATES, FrocCurve, froc_curve
from ct_pipeline.evaluation.matching import (
    CHALLENGE_MAX_FINDINGS_PER_SCAN,
    MatchCounts,
    MatchedFindings,
    match_findings,
)
from ct_pipeline.evaluation.tables import (
    FindingTable,
    NoduleTable,
    annotated_series,
    read_findings,
    read_nodules,
    read_series_list,
)

# Nodule size groups: label, lower and upper bound in mm (see size_group_mask for the edges).
SIZE_GROUPS = (("<5mm", 0.0, 5.0), ("5-10mm", 5.0, 10.0), (">10mm", 10.0, math.inf))


@dataclass(frozen=True)
class FrocConfig:
    """How to score.

    Attributes:
        max_findings_per_scan: the challenge's cap (100); 0 keeps all findings.
        bootstrap_samples: scan resamples for the confidence intervals; 0 for none.
        seed: seed of the resampling.
        by_size: also score nodules under 5 mm, 5-10 mm and over 10 mm separately.
        band_points: FP rates (log-spaced over 1/8..8) at which the bootstrap band is kept.
    """

    max_findings_per_scan: int = CHALLENGE_MAX_FINDINGS_PER_SCAN
    bootstrap_samples: int = 1000
    seed: int = 0
    by_size: bool = False
    band_points: int = 100

    def __post_init__(self) -> None:
        if self.bootstrap_samples < 0:
            raise BadInputError(
                f"--bootstrap {self.bootstrap_samples} is negative; give 0 (no interval) or more, e.g. 1000"
            )
        if self.seed < 0:  # numpy's generators take none
            raise BadInputError(f"--seed {self.seed} is negative; give 0 or more")
        if self.max_findings_per_scan < 0:
            raise BadInputError(
                f"max findings per scan {self.max_findings_per_scan} is negative; the challenge uses 100"
            )
        if self.band_points < 2:
            raise BadInputError(f"band_points {self.band_points} must be at least 2")


@dataclass(frozen=True, eq=False)
class FrocSummary:
    """FROC figures of one group of nodules (all, or one size group).

    ``sensitivity`` matches ``fp_rates``; the ``*_ci95`` fields are None without bootstrap, and
    figures are NaN when the group has no nodule. ``band_*`` hold the bootstrap band at ``band_fp_rates``.
    """

    label: str
    n_nodules: int
    n_detected: int
    curve: FrocCurve
    fp_rates: tuple[float, ...]
    sensitivity: tuple[float, ...]
    cpm: float
    cpm_ci95: tuple[float, float] | None
    sensitivity_ci95: tuple[tuple[float, float], ...] | None
    band_fp_rates: np.ndarray | None
    band_lower: np.ndarray | None
    band_upper: np.ndarray | None

    def to_dict(self) -> dict:
        """JSON-ready figures (NaN becomes None); FP-rate keys as "0.125" ... "8"."""
        keys = [f"{rate:g}" for rate in self.fp_rates]
        return {
            "cpm": _finite_or_none(self.cpm),
            "cpm_ci95": None if self.cpm_ci95 is None else [_finite_or_none(v) for v in self.cpm_ci95],
            "sensitivity_at_fp": {k: _finite_or_none(v) for k, v in zip(keys, self.sensitivity)},
            "sensitivity_at_fp_ci95": None
            if self.sensitivity_ci95 is None
            else {k: [_finite_or_none(v) for v in ci] for k, ci in zip(keys, self.sensitivity_ci95)},
            "n_nodules": self.n_nodules,
            "n_detected": self.n_detected,
        }


@dataclass(frozen=True, eq=False)
class FrocReport:
    """The result of ``ct evaluate``: overall figures, optional size groups, and the bookkeeping."""

    overall: FrocSummary
    by_size: tuple[FrocSummary, ...]
    n_scans: int
    n_false_positives: int
    counts: MatchCounts
    config: FrocConfig

    def to_dict(self) -> dict:
        result = self.overall.to_dict()
        del result["n_nodules"], result["n_detected"]
        result.update(
            n_scans=self.n_scans,
            n_nodules=self.overall.n_nodules,
            n_detected=self.overall.n_detected,
            n_findings=self.counts.n_scored,
            n_false_positives=self.n_false_positives,
            false_positives_per_scan=self.n_false_positives / self.n_scans,
            findings={
                "read": self.counts.n_read,
                "outside_evaluated_set": self.counts.n_outside_set,
                "over_cap": self.counts.n_over_cap,
                "scored": self.counts.n_scored,
                "on_excluded": self.counts.n_on_excluded,
                "extra_hits_on_a_nodule": self.counts.n_extra_hits,
                "inside_two_nodules": self.counts.n_on_two_nodules,
            },
            max_findings_per_scan=self.config.max_findings_per_scan,
            bootstrap={"samples": self.config.bootstrap_samples, "seed": self.config.seed},
        )
        if self.by_size:
            result["by_size"] = {group.label: group.to_dict() for group in self.by_size}
        return result


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _summarise(
    label: str,
    matched: MatchedFindings,
    nodule_mask: np.ndarray,
    per_sample: np.ndarray | None,
    band_fp_rates: np.ndarray,
) -> FrocSummary:
    """Figures of the nodules in ``nodule_mask``.

    ``per_sample`` is :func:`bootstrap_sensitivity`'s result at the LUNA16 rates then ``band_fp_rates``.
    """
    detected = matched.nodule_detected & nodule_mask
    n_nodules = int(nodule_mask.sum())
    fp_rates = LUNA16_FP_RATES
    if n_nodules:
        curve = froc_curve(matched.nodule_probability[detected], matched.fp_probability, n_nodules, matched.n_scans)
        sensitivity = curve.sensitivity_at(fp_rates)
    else:
        curve = FrocCurve(np.zeros(1), np.full(1, np.nan), np.full(1, np.inf))
        sensitivity = np.full(len(fp_rates), np.nan)
    cpm_ci = sens_ci = band_lower = band_upper = None
    if per_sample is not None:
        at_rates = per_sample[:, : len(fp_rates)]
        interval = percentile_interval(np.column_stack((at_rates, at_rates.mean(axis=1))))
        sens_ci = tuple((float(lo), float(hi)) for lo, hi in zip(interval[0, :-1], interval[1, :-1]))
        cpm_ci = (float(interval[0, -1]), float(interval[1, -1]))
        band_lower, band_upper = percentile_interval(per_sample[:, len(fp_rates) :])
    return FrocSummary(
        label=label,
        n_nodules=n_nodules,
        n_detected=int(detected.sum()),
        curve=curve,
        fp_rates=fp_rates,
        sensitivity=tuple(float(s) for s in sensitivity),
        cpm=float(np.mean(sensitivity)),
        cpm_ci95=cpm_ci,
        sensitivity_ci95=sens_ci,
        band_fp_rates=None if per_sample is None else band_fp_rates,
        band_lower=band_lower,
        band_upper=band_upper,
    )


def size_group_mask(diameter_mm: np.ndarray, low_mm: float, high_mm: float) -> np.ndarray:
    """Nodules of a size group: under 5 mm is d < 5, 5-10 mm is 5 <= d <= 10, over 10 mm is d > 10."""
    if low_mm == 0.0:
        return diameter_mm < high_mm
    if math.isinf(high_mm):
        return diameter_mm > low_mm
    return (diameter_mm >= low_mm) & (diameter_mm <= high_mm)


def evaluate_froc(
    findings: FindingTable,
    nodules: NoduleTable,
    series_uids: tuple[str, ...] | None = None,
    excluded: NoduleTable | None = None,
    config: FrocConfig = FrocConfig(),
) -> FrocReport:
    """Score ``findings`` against ``nodules`` on the scans ``series_uids`` (default: the annotated ones).

    Within a size group, findings on nodules of other sizes are ignored (neither way), and the
    false positives are those of the whole system.

    Raises:
        BadDataError: when no nodule lies on the evaluated scans (sensitivity would be undefined).
    """
    if series_uids is None:
        series_uids = annotated_series(nodules)
    series_uids = tuple(dict.fromkeys(series_uids))
    if not series_uids:
        raise BadDataError("no scans to evaluate: the annotations list no nodule; give --series-file")
    matched = match_findings(findings, nodules, series_uids, excluded, config.max_findings_per_scan)
    if matched.n_nodules == 0:
        raise BadDataError(
            f"none of the {matched.n_scans} evaluated scans has an annotated nodule, so sensitivity is "
            "undefined; check that --annotations and --series-file describe the same scans"
        )
    masks = {"all": np.ones(matched.n_nodules, dtype=bool)}
    if config.by_size:
        masks.update(
            (label, size_group_mask(matched.nodule_diameter_mm, low, high)) for label, low, high in SIZE_GROUPS
        )
    band_fp_rates = np.geomspace(LUNA16_FP_RATES[0], LUNA16_FP_RATES[-1], config.band_points)
    per_sample = dict.fromkeys(masks)
    if config.bootstrap_samples:
        counts = resample_counts(matched.n_scans, config.bootstrap_samples, config.seed)
        groups = [
            NoduleGroup(
                matched.nodule_scan[mask & matched.nodule_detected],
                matched.nodule_probability[mask & matched.nodule_detected],
                np.bincount(matched.nodule_scan[mask], minlength=matched.n_scans),
            )
            for mask in masks.values()
        ]
        rates = np.concatenate((LUNA16_FP_RATES, band_fp_rates))
        samples = bootstrap_sensitivity(matched.fp_scan, matched.fp_probability, groups, counts, rates)
        per_sample = dict(zip(masks, samples))
    summaries = [_summarise(label, matched, mask, per_sample[label], band_fp_rates) for label, mask in masks.items()]
    overall, by_size = summaries[0], tuple(summaries[1:])
    return FrocReport(
        overall=overall,
        by_size=by_size,
        n_scans=matched.n_scans,
        n_false_positives=len(matched.fp_scan),
        counts=matched.counts,
        config=config,
    )


def evaluate_froc_files(
    predictions: Path,
    annotations: Path,
    excluded: Path | None = None,
    series_file: Path | None = None,
    config: FrocConfig = FrocConfig(),
) -> FrocReport:
    """:func:`evaluate_froc` on the challenge's CSV files (see :mod:`ct_pipeline.evaluation.tables`)."""
    return evaluate_froc(
        read_findings(predictions),
        read_nodules(annotations),
        read_series_list(series_file) if series_file is not None else None,
        read_nodules(excluded, excluded=True) if excluded is not None else None,
        config,
    )
