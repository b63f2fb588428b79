"""Epoch metrics: classification (precision, recall, F1, ROC AUC, confusion) and segmentation
(pixel precision, recall, Dice; per-nodule recall). numpy and torch only.

Meters collect per-batch results on the training device without synchronising (no ``.item()``
per batch: on a GPU that would stall the pipeline); the loop reduces them over ranks once per
epoch and the ``*_metrics`` functions turn the totals into numbers.

Conventions: a ratio whose denominator is 0 (precision with no predicted positive, say) is 0.0;
ROC AUC is NaN when only one class is present.
"""

from __future__ import annotations

import numpy as np
import torch


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties 1/2.

    Computed exactly from average ranks (Mann-Whitney U), O(n log n).
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # average rank (1-based) of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def size_only_baseline(
    train_diameters_mm: np.ndarray, train_labels: np.ndarray, val_diameters_mm: np.ndarray, val_labels: np.ndarray
) -> dict[str, float]:
    """The malignancy classifier's yardstick: "malignant when larger than a threshold".

    The threshold (mm) is the one that maximises balanced accuracy on the training split; the
    returned ``size_threshold_auc`` is the validation ROC AUC of that yes/no rule, and
    ``size_auc`` the validation ROC AUC of the diameter itself as the score (the best any
    size-only rule can do there).
    """
    train_d = np.asarray(train_diameters_mm, dtype=np.float64)
    train_y = np.asarray(train_labels).astype(bool)
    best_threshold, best_score = float("nan"), -1.0
    for threshold in np.unique(train_d):
        predicted = train_d >= threshold
        sensitivity = _ratio((predicted & train_y).sum(), train_y.sum())
        specificity = _ratio((~predicted & ~train_y).sum(), (~train_y).sum())
        if (sensitivity + specificity) / 2 > best_score:
            best_threshold, best_score = float(threshold), (sensitivity + specificity) / 2
    val_d = np.asarray(val_diameters_mm, dtype=np.float64)
    return {
        "size_threshold_mm": best_threshold,
        "size_threshold_auc": roc_auc(val_labels, (val_d >= best_threshold).astype(np.float64)),
        "size_auc": roc_auc(val_labels, val_d),
    }


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """tp, fp, tn, fn of boolean ``predicted`` against boolean ``labels``."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    return {
        "tp": int((labels & predicted).sum()),
        "fp": int((~labels & predicted).sum()),
        "tn": int((~labels & ~predicted).sum()),
        "fn": int((labels & ~predicted).sum()),
    }


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, losses: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Metrics of one epoch of a two-class classifier.

    Args:
        labels: (N,) 0/1 true classes (1 = nodule, or malignant).
        probabilities: (N,) predicted probability of class 1.
        losses: (N,) per-sample loss.
        threshold: class 1 is predicted when the probability is above it.

    Returns:
        loss, precision, recall, f1, roc_auc, accuracy, and the confusion counts tp/fp/tn/fn
        plus n (samples) and positives, as floats (for TensorBoard and checkpoints).
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    counts = confusion_counts(labels, probabilities > threshold)
    precision = _ratio(counts["tp"], counts["tp"] + counts["fp"])
    recall = _ratio(counts["tp"], counts["tp"] + counts["fn"])
    return {
        "loss": float(np.mean(losses)) if len(losses) else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "roc_auc": roc_auc(labels, probabilities),
        "accuracy": _ratio(counts["tp"] + counts["tn"], labels.size),
        **{key: float(value) for key, value in counts.items()},
        "n": float(labels.size),
        "positives": float(labels.sum()),
    }


def segmentation_metrics(tp: float, fp: float, fn: float, loss_sum: float, n: float) -> dict[str, float]:
    """Pixel metrics from summed counts: loss (mean per sample), precision, recall, Dice."""
    return {
        "loss": _ratio(loss_sum, n) if n else float("nan"),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "n": float(n),
    }


class ClassificationMeter:
    """Per-sample probabilities, labels and losses of an epoch, kept on their device."""

    def __init__(self, split: str = "train") -> None:
        self.split = split
        self._parts: list[torch.Tensor] = []

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor) -> None:
        """Add a batch: (N,) probability of class 1, (N,) labels, (N,) losses."""
        self._parts.append(torch.stack([probabilities.detach().float(), labels.float(), losses.detach().float()]))

    def local(self, device: torch.device) -> torch.Tensor:
        """(3, N) this rank's probabilities, labels and losses (empty when no batch was seen)."""
        if not self._parts:
            return torch.zeros(3, 0, device=device)
        return torch.cat(self._parts, dim=1)


class SegmentationMeter:
    """Summed pixel counts and losses of an epoch on the device, the nodules the predicted masks
    touched (validation), and a few example slices for TensorBoard.

    Attributes:
        totals: (5,) float64 tp, fp, fn pixels, loss sum, samples (float64: 1e9 pixels count exactly).
        find_nodules: whether to look for touched nodules (validation on whole slices).
        nodules_found: (series UID, nodule number in the series) of the nodules touched.
        n_examples: how many example slices to keep.
        examples: (image (H, W) HU of the middle channel, label (H, W) bool, predicted (H, W) bool), CPU.
    """

    def __init__(self, device: torch.device, find_nodules: bool = False, n_examples: int = 0) -> None:
        self.totals = torch.zeros(5, dtype=torch.float64, device=device)
        self.find_nodules = find_nodules
        self.nodules_found: set[tuple[str, int]] = set()
        self.n_examples = n_examples
        self.examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def update(self, predicted: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor) -> None:
        """Add a batch: (N, 1, H, W) bool predicted mask, (N, 1, H, W) bool labels, (N,) losses."""
        self.totals += torch.stack(
            [
                (predicted & labels).sum(),
                (predicted & ~labels).sum(),
                (~predicted & labels).sum(),
                losses.detach().sum(),
                torch.tensor(losses.shape[0], device=losses.device),
            ]
        ).to(torch.float64)


def dice_loss(probabilities: torch.Tensor, labels: torch.Tensor, epsilon: float = 1.0) -> torch.Tensor:
    """The book's soft Dice loss per sample: 1 - (2 |P*L| + eps) / (|P| + |L| + eps). (N, ...) -> (N,)."""
    dims = tuple(range(1, probabilities.dim()))
    correct = (probabilities * labels).sum(dim=dims)
    return 1.0 - (2.0 * correct + epsilon) / (probabilities.sum(dim=dims) + labels.sum(dim=dims) + epsilon)


def segmentation_loss(
    probabilities: torch.Tensor, labels: torch.Tensor, fn_weight: float, bce_weight: float = 0.0
) -> torch.Tensor:
    """Dice loss plus ``fn_weight`` times the Dice loss of the labelled pixels only (the book's
    false-negative term: missing nodule pixels costs ``fn_weight`` times more), plus ``bce_weight``
    times the mean per-pixel binary cross-entropy. (N,) per sample."""
    loss = dice_loss(probabilities, labels) + fn_weight * dice_loss(probabilities * labels, labels)
    if bce_weight:
        # By hand on clamped probabilities: the model ends in a sigmoid, and torch's BCE refuses autocast.
        p = probabilities.float().clamp(1e-6, 1.0 - 1e-6)
        bce = -(labels * torch.log(p) + (1.0 - labels) * torch.log1p(-p))
        loss = loss + bce_weight * bce.mean(dim=tuple(range(1, p.dim())))
    return loss
