"""The LUNA16 FROC curve, built as the challenge's script builds it.

The curve comes from the ROC curve of the scored entries (one per detected nodule, at its best
finding's probability, plus one per false positive): a point per *distinct* probability (tied
findings enter together, so a step can be diagonal), the lowest point joined to (0, 0), and

    false positives per scan = false positives at or above the threshold / number of scans
    sensitivity              = detected nodules at or above the threshold / all nodules (missed too)

The sensitivity at a false-positive rate is read off by linear interpolation (``np.interp``: on
a vertical step the top is taken; past the curve's last point, its last sensitivity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUNA16_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """The FROC curve's points, from (0, 0) upwards; shapes (K + 1,).

    ``threshold[k]`` is the probability at or above which findings give point k (inf for (0, 0)).
    """

    fp_per_scan: np.ndarray
    sensitivity: np.ndarray
    threshold: np.ndarray

    def sensitivity_at(self, fp_rates) -> np.ndarray:
        """Sensitivity at the given false-positive rates (per scan), by linear interpolation."""
        return np.interp(np.asarray(fp_rates, dtype=np.float64), self.fp_per_scan, self.sensitivity)


def _curve_points(
    cum_tp: np.ndarray, cum_fp: np.ndarray, n_nodules: int, n_scans: int
) -> tuple[np.ndarray, np.ndarray]:
    """FP per scan and sensitivity from the cumulative counts at each threshold, shapes (K,).

    The arithmetic is the challenge's (rates scaled back by their totals) rather than the
    simpler cum_fp / n_scans: the two can differ in the last bit, and at an operating point
    that falls exactly on a vertical step that bit decides between its bottom and its top.
    """
    cum_tp = cum_tp.astype(np.float64)
    cum_fp = cum_fp.astype(np.float64)
    n_fp, n_detected = cum_fp[-1], cum_tp[-1]
    # with no false positive the challenge puts every point at 0 FP per scan
    fp_per_scan = cum_fp / n_fp * n_fp / n_scans if n_fp > 0 else np.zeros_like(cum_fp)
    sensitivity = cum_tp / n_detected * n_detected / n_nodules if n_detected > 0 else np.zeros_like(cum_tp)
    return fp_per_scan, sensitivity


def _corners(cum_tp: np.ndarray, cum_fp: np.ndarray) -> np.ndarray:
    """Indices of the points where the curve turns (sklearn's ``drop_intermediate``, which the challenge used).

    Dropping the points inside straight runs changes interpolated values only in the last bit;
    it is done so the numbers match the challenge's to the bit.
    """
    if len(cum_tp) <= 2:
        return np.arange(len(cum_tp))
    turns = np.logical_or(np.diff(cum_fp, 2), np.diff(cum_tp, 2))
    return np.flatnonzero(np.concatenate(([True], turns, [True])))


def froc_curve(tp_probability, fp_probability, n_nodules: int, n_scans: int) -> FrocCurve:
    """The FROC curve of detected nodules' probabilities and false positives' probabilities.

    Args:
        tp_probability: (D,) probability of each detected nodule (its best finding).
        fp_probability: (F,) probability of each false positive.
        n_nodules: all nodules, missed ones included (>= D, > 0).
        n_scans: scans evaluated (> 0).
    """
    probability = np.concatenate((np.asarray(tp_probability, np.float64), np.asarray(fp_probability, np.float64)))
    is_tp = np.arange(len(probability)) < len(tp_probability)
    order = np.argsort(probability, kind="mergesort")[::-1]
    ordered = probability[order]
    if len(ordered) == 0:
        return FrocCurve(np.zeros(1), np.zeros(1), np.full(1, np.inf))
    # one point per distinct probability: the last entry of each run of ties
    group_end = np.append(np.flatnonzero(np.diff(ordered)), len(ordered) - 1)
    cum_tp = np.cumsum(is_tp[order])[group_end]
    cum_fp = group_end + 1 - cum_tp
    corners = _corners(cum_tp, cum_fp)
    fp_per_scan, sensitivity = _curve_points(cum_tp[corners], cum_fp[corners], n_nodules, n_scans)
    return FrocCurve(
        fp_per_scan=np.concatenate(([0.0], fp_per_scan)),
        sensitivity=np.concatenate(([0.0], sensitivity)),
        threshold=np.concatenate(([np.inf], ordered[group_end][corners])),
    )
