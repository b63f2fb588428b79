"""Metrics against brute-force definitions, and the losses against hand-computed values."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch

from ct_pipeline.training.epoch import epoch_seed, weights_digest
from ct_pipeline.training.metrics import (
    SegmentationMeter,
    classification_metrics,
    confusion_counts,
    dice_loss,
    roc_auc,
    segmentation_loss,
    segmentation_metrics,
    size_only_baseline,
)
from ct_pipeline.training.run_log import RunLog, format_epoch_line, overlay


def _pairwise_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_extremes_and_single_class():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_classification_metrics_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probabilities = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4])
    metrics = classification_metrics(labels, probabilities, losses=np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
    # predicted positive: 0.9, 0.6 (true) and 0.7 (false); missed: 0.2
    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (2, 1, 1, 3)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["loss"] == pytest.approx(4.0)
    assert metrics["roc_auc"] == pytest.approx(_pairwise_auc(labels, probabilities))
    assert metrics["n"] == 7 and metrics["positives"] == 3


def test_no_predicted_positive_gives_zero_precision_not_nan():
    metrics = classification_metrics(np.array([1, 0]), np.array([0.1, 0.2]), np.array([0.5, 0.5]))
    assert metrics["precision"] == 0.0 and metrics["recall"] == 0.0 and metrics["f1"] == 0.0
    assert confusion_counts([1, 0], [False, False]) == {"tp": 0, "fp": 0, "tn": 1, "fn": 1}


def test_segmentation_meter_and_metrics():
    meter = SegmentationMeter(torch.device("cpu"))
    predicted = torch.tensor([[[[1, 1, 0, 0]]], [[[0, 0, 0, 1]]]], dtype=torch.bool)
    labels = torch.tensor([[[[1, 0, 1, 0]]], [[[0, 0, 0, 1]]]], dtype=torch.bool)
    meter.update(predicted, labels, torch.tensor([0.5, 1.5]))
    tp, fp, fn, loss_sum, n = meter.totals.tolist()
    assert (tp, fp, fn, loss_sum, n) == (2, 1, 1, 2.0, 2)
    metrics = segmentation_metrics(tp, fp, fn, loss_sum, n)
    assert metrics["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["loss"] == pytest.approx(1.0)


def test_dice_loss_values_and_false_negative_weight():
    labels = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    perfect = labels.clone()
    assert dice_loss(perfect, labels).item() == pytest.approx(0.0)
    half = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    # (2*1 + 1) / (1 + 2 + 1) = 0.75
    assert dice_loss(half, labels).item() == pytest.approx(0.25)
    # the false-negative term: dice of (pred * label) against label, here the same 0.25, weighted 8
    assert segmentation_loss(half, labels, fn_weight=8.0).item() == pytest.approx(0.25 + 8 * 0.25)
    # a false positive costs only through the plain Dice term
    extra = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    assert segmentation_loss(extra, labels, fn_weight=8.0).item() == pytest.approx(1 - 5 / 6)


def test_epoch_seed_is_pure_and_distinct():
    seeds = {epoch_seed(0, epoch, rank, stream) for epoch in range(3) for rank in range(3) for stream in range(2)}
    assert len(seeds) == 18
    assert epoch_seed(5, 2, 1) == epoch_seed(5, 2, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_weights_digest_changes_with_any_weight():
    model = torch.nn.Linear(3, 2)
    before = weights_digest(model)
    with torch.no_grad():
        model.bias[1] += 1e-6
    assert weights_digest(model) != before


def test_epoch_line_and_overlay():
    line = format_epoch_line(
        3,
        10,
        {
            "train": {"loss": 0.5, "f1": 0.25},
            "val": {"loss": 0.4, "f1": float("nan"), "tp": 4, "fp": 1, "fn": 2, "tn": 30},
        },
        ("loss", "f1"),
        125.0,
        71.4,
        best=True,
    )
    assert line == (
        "epoch 3/10 | train loss 0.500 f1 0.250 | val loss 0.400 f1 n/a [tp 4 fp 1 fn 2 tn 30] | 71 samples/s 2m05s *best"
    )
    image = overlay(torch.full((4, 5), -1000.0), torch.eye(4, 5, dtype=torch.bool), torch.zeros(4, 5, dtype=torch.bool))
    assert image.shape == (3, 4, 5)
    assert image[1, 0, 0] == pytest.approx(0.5) and image[0, 0, 0] == 0.0  # label green, no prediction


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_when_not_a_terminal_and_a_bar_when_it_is(tmp_path):
    plain = io.StringIO()
    log = RunLog(tmp_path, enabled=True, out=plain, plain_every_s=0.0)
    with log.progress("epoch 1 train", 64) as progress:
        progress.advance(32, torch.tensor([0.5, 1.5]))
        progress.advance(32)
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("epoch 1 train 32/64 samples, ") and lines[0].endswith(" loss 1.0000")
    assert lines[1].startswith("epoch 1 train 64/64 samples, ")

    terminal = _Terminal()
    log = RunLog(tmp_path, enabled=True, out=terminal)
    assert log.interactive
    with log.progress("epoch 1 train", 64) as progress:
        progress.advance(64)
    assert "samples, " not in terminal.getvalue()  # the bar, not plain lines

    silent = io.StringIO()
    log = RunLog(tmp_path, enabled=False, out=silent)  # ranks other than 0
    with log.progress("x", 1) as progress:
        progress.advance(1)
    log.message("hello")
    log.scalars("train", {"loss": 1.0}, 1)
    assert silent.getvalue() == "" and not (tmp_path / "tensorboard").exists()


def test_size_only_baseline_picks_the_training_threshold_and_scores_validation():
    # Training: malignant from 10 mm up, except one small malignant nodule; the best balanced
    # accuracy is at 10 mm (sensitivity 3/4, specificity 1).
    train_d = np.array([4.0, 6.0, 8.0, 5.0, 10.0, 12.0, 20.0])
    train_y = np.array([0, 0, 0, 1, 1, 1, 1])
    val_d = np.array([5.0, 9.0, 11.0, 30.0, 7.0])
    val_y = np.array([0, 1, 1, 1, 0])
    result = size_only_baseline(train_d, train_y, val_d, val_y)
    assert result["size_threshold_mm"] == 10.0
    # the rule says yes for 11 and 30 only: 2 of 3 malignant found, both benign right
    assert result["size_threshold_auc"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["size_auc"] == pytest.approx(1.0)  # every malignant one is larger than every benign one


def test_segmentation_loss_adds_the_per_pixel_cross_entropy_when_asked():
    probabilities = torch.tensor([[[0.9, 0.2], [0.1, 0.5]]])
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    dice_only = segmentation_loss(probabilities, labels, fn_weight=8.0)
    with_bce = segmentation_loss(probabilities, labels, fn_weight=8.0, bce_weight=2.0)
    bce = -(math.log(0.9) + math.log(0.8) + math.log(0.9) + math.log(0.5)) / 4
    assert with_bce.shape == (1,)
    assert with_bce.item() == pytest.approx(dice_only.item() + 2.0 * bce, rel=1e-5)
