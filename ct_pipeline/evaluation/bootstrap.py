"""Bootstrap confidence intervals for FROC sensitivities: resample the scans with replacement.

Seeded, so an interval is reproducible (the challenge's script is not); otherwise the
challenge's method: each resample keeps the number of scans, a scan drawn m times brings its
nodules and false positives m times, and the 95% interval of each figure is
sorted[floor(0.025 n)] .. sorted[floor(0.975 n)] over the n resamples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
_BOOTSTRAP_CHUNK = 32  # resamples per vectorised step: (chunk x false positives) arrays stay small


def resample_counts(n_scans: int, n_samples: int, seed: int) -> np.ndarray:
    """(n_samples, n_scans) int: how often each scan is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(n_scans, size=(n_samples, n_scans))
    flat = picks + np.arange(n_samples)[:, None] * n_scans
    return np.bincount(flat.ravel(), minlength=n_samples * n_scans).reshape(n_samples, n_scans)


@dataclass(frozen=True, eq=False)
class NoduleGroup:
    """Detected nodules of one group (all, or a size group) for :func:`bootstrap_sensitivity`.

    Attributes:
        tp_scan: (D,) scan of each detected nodule.
        tp_probability: (D,) its best finding's probability.
        nodules_per_scan: (S,) nodules of the group on each scan, missed ones included.
    """

    tp_scan: np.ndarray
    tp_probability: np.ndarray
    nodules_per_scan: np.ndarray


def bootstrap_sensitivity(
    fp_scan, fp_probability, groups: list[NoduleGroup], counts: np.ndarray, fp_rates
) -> list[np.ndarray]:
    """Sensitivity at ``fp_rates`` in each resample of scans, per nodule group: (n_samples, len(fp_rates)) each.

    ``counts`` comes from :func:`resample_counts`; a scan drawn m times contributes its entries m
    times, as in the challenge's bootstrap. Rows are NaN for resamples that hold no nodule of the group.

    Instead of building each resample's curve, this finds for each rate x the curve's last point
    at or below x and the next one (``np.interp``'s rule): the last point lies just before the
    first false-positive probability v whose false positives per scan exceed x; it holds the
    nodules detected above v, the next point those at or above v. So only the false positives
    need a cumulative sum per resample (shared by the groups, and cut short past 8 per scan), and
    the result equals interpolating each resample's curve (to within rounding, about 1e-16).
    """
    fp_rates = np.asarray(fp_rates, dtype=np.float64)
    fp_probability = np.asarray(fp_probability, dtype=np.float64)
    n_samples, n_scans = counts.shape
    # float64 weights: exact below 2**53, and numpy's float cumsum is several times faster than int's
    weights = counts.astype(np.float64)
    results = [np.full((n_samples, len(fp_rates)), np.nan) for _ in groups]

    fp_order = np.argsort(-fp_probability, kind="stable")
    fp_sorted = fp_probability[fp_order]
    fp_scan_sorted = np.asarray(fp_scan, dtype=np.int64)[fp_order]
    n_fp = weights @ np.bincount(fp_scan_sorted, minlength=n_scans).astype(np.float64)
    group_end = (
        np.append(np.flatnonzero(np.diff(fp_sorted)), len(fp_sorted) - 1) if len(fp_sorted) else np.zeros(0, int)
    )
    n_values = len(group_end)
    # A prefix of the false positives with ~1.5 times the most the rates need; resamples that do
    # not pass the largest rate within it are redone in full.
    needed = 1.5 * float(fp_rates.max(initial=0.0)) * n_scans + 100
    prefix_values = min(n_values, int(np.searchsorted(group_end + 1, needed)) + 1)
    prefix_entries = int(group_end[prefix_values - 1]) + 1 if n_values else 0

    prepared = []
    for group in groups:
        order = np.argsort(-np.asarray(group.tp_probability, dtype=np.float64), kind="stable")
        descending = -np.asarray(group.tp_probability, dtype=np.float64)[order]
        values = fp_sorted[group_end]
        prepared.append(
            (
                np.asarray(group.tp_scan, dtype=np.int64)[order],
                np.searchsorted(descending, -values, side="left"),  # detected with probability > v
                np.searchsorted(descending, -values, side="right"),  # with probability >= v
                weights @ np.asarray(group.nodules_per_scan, dtype=np.float64),
            )
        )

    for start in range(0, n_samples, _BOOTSTRAP_CHUNK):
        rows = weights[start : start + _BOOTSTRAP_CHUNK]
        cum_fp = np.cumsum(rows[:, fp_scan_sorted[:prefix_entries]], axis=1)[:, group_end[:prefix_values]]
        cum_tps = []
        for tp_scan_sorted, *_ in prepared:
            cum_tp = np.zeros((len(rows), len(tp_scan_sorted) + 1))
            np.cumsum(rows[:, tp_scan_sorted], axis=1, out=cum_tp[:, 1:])
            cum_tps.append(cum_tp)
        for i in range(len(rows)):
            sample = start + i
            row_fp = cum_fp[i]
            total_fp = n_fp[sample]
            if total_fp > 0:
                fps = row_fp / total_fp * total_fp / n_scans  # the challenge's arithmetic (see curve._curve_points)
                if prefix_values < n_values and fps[-1] <= fp_rates.max():
                    row_fp = np.cumsum(weights[sample, fp_scan_sorted])[group_end]
                    fps = row_fp / total_fp * total_fp / n_scans
                last = np.searchsorted(fps, fp_rates, side="right") - 1
                beyond = last + 1 >= n_values
                nxt = np.minimum(last + 1, len(fps) - 1)
                fps_here = np.where(last >= 0, fps[np.maximum(last, 0)], 0.0)
                fps_next = fps[nxt]
            for (tp_scan_sorted, tp_above, tp_at_or_above, n_nodules), cum_tp, result in zip(
                prepared, cum_tps, results
            ):
                nodules = n_nodules[sample]
                if nodules == 0:
                    continue  # no nodule of the group drawn: sensitivity undefined, the row stays NaN
                detected = cum_tp[i, -1]
                sens = cum_tp[i] / detected * detected / nodules if detected > 0 else np.zeros(cum_tp.shape[1])
                if total_fp == 0:
                    result[sample] = sens[-1]  # no false positive: the whole curve sits at 0 FP per scan
                    continue
                sens_here = sens[np.where(beyond, len(tp_scan_sorted), tp_above[nxt])]
                sens_next = sens[tp_at_or_above[nxt]]
                with np.errstate(divide="ignore", invalid="ignore"):
                    slope = (sens_next - sens_here) / (fps_next - fps_here)
                    between = slope * (fp_rates - fps_here) + sens_here
                result[sample] = np.where(beyond | (fps_here == fp_rates), sens_here, between)
    return results


def percentile_interval(values: np.ndarray) -> np.ndarray:
    """The challenge's 95% interval per column: sorted[floor(p n)], sorted[floor((1 - p) n)], p = 0.025.

    NaN rows are left out; columns of an all-NaN input give NaN. Shape (2, columns).
    """
    values = values[~np.isnan(values).any(axis=1)]
    if len(values) == 0:
        return np.full((2, values.shape[1]), np.nan)
    tail = (1.0 - CONFIDENCE) / 2.0
    ordered = np.sort(values, axis=0)
    return np.stack(
        (ordered[int(math.floor(tail * len(ordered)))], ordered[int(math.floor((1.0 - tail) * len(ordered)))])
    )
