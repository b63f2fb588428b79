"""Training the segmentation U-Net: our whole loop vs a book-style training step, samples per second.

Baseline (same run, same data, same model): the book's step: float32, contiguous tensors,
batch 16 of 7x64x64 crops, Adam, its Dice loss with false negatives weighted 8x, inputs fed
from the same DataLoader and augmented per sample on the CPU (the book augments in its
Dataset). Ours: `ct train-seg`'s loop as users run it (``train()``: batched augmentation,
channels-last, the precision "auto" picks, metrics, checkpoints), timed over an epoch after the
first. The machine may be shared, so the two are measured in alternating rounds and each keeps
its best round. A run of our loop in fp32 with contiguous tensors (the book's numerics) checks
validation Dice.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Figure, Section
from benchmarks.training_bench import (
    WARMUP_BATCHES,
    TrainBench,
    book_style_samples_per_s,
    measure,
)
from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import open_catalog
from ct_pipeline.datasets import AugmentationConfig, SegmentationDataset, SegmentationDatasetConfig, augment_batch
from ct_pipeline.models import SegmentationUNet
from ct_pipeline.training.metrics import segmentation_loss

BENCH = TrainBench(
    task="seg",
    n_series=20,
    seed=12,
    val_stride=4,
    batch=16,
    workers=1,
    rounds=2,
    speed_epochs=3,
    speed_epoch_size=800,
    quality_epochs=3,
    quality_epoch_size=1600,
)
BASELINE_BATCHES = 30


class BookStyleDataset(Dataset):
    """The book's training dataset shape: a per-sample augmented (7, 64, 64) crop and its mask."""

    def __init__(self, slices: SegmentationDataset, augmentation: AugmentationConfig) -> None:
        self.slices, self.augmentation = slices, augmentation

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int):
        image, label, _, _ = self.slices[index]
        generator = torch.Generator().manual_seed(index)
        image, label = augment_batch(image[None], self.augmentation, generator, label[None])
        return image[0], label[0]


def book_style(data_root: Path, cache_dir: Path) -> float:
    """The book's step: Adam, Dice loss with false negatives weighted 8x, float32 contiguous crops."""
    catalog = open_catalog([data_root], cache_dir)
    slices = SegmentationDataset(
        catalog,
        CropCache(cache_dir),
        SegmentationDatasetConfig(split="train", epoch_size=BENCH.batch * (BASELINE_BATCHES + WARMUP_BATCHES)),
    )
    loader = DataLoader(
        BookStyleDataset(slices, AugmentationConfig.book_segmentation()),
        batch_size=BENCH.batch,
        num_workers=BENCH.workers,
    )
    torch.manual_seed(0)
    model = SegmentationUNet()
    optimizer = torch.optim.Adam(model.parameters())
    return book_style_samples_per_s(
        loader, model, optimizer, lambda m, inputs, labels: segmentation_loss(m(inputs), labels, 8.0).mean()
    )


def run() -> Section:
    measured = measure(BENCH, book_style)
    ours, fp32, speed, speed_bf16, baseline = (
        measured.ours,
        measured.fp32,
        measured.speed,
        measured.speed_bf16,
        measured.baseline,
    )
    dice, dice_fp32 = ours.metrics["val"]["dice"], fp32.metrics["val"]["dice"]
    ratio = speed / baseline
    return Section(
        key="train_seg",
        title="Training the segmentation U-Net (CPU)",
        command="python -m benchmarks.run train_seg",
        setup=BENCH.setup_text(
            measured.precision,
            "7x64x64 crops",
            "book-style fp32 contiguous Adam step with per-sample CPU augmentation in the Dataset",
            BASELINE_BATCHES,
        ),
        expectation=(
            "about 1.3x: channels-last 2D convolutions (179 vs 139 samples/s per step measured alone); bf16 autocast "
            "does not help training on this CPU (no AMX: 154 samples/s), so auto picks fp32 here"
        ),
        figures=[
            Figure(
                "training throughput",
                speed,
                "samples/s",
                baseline,
                "book-style fp32 step",
                ratio,
                ">= 2.5x the baseline",
                ratio >= 2.5,
            ),
            Figure(
                "training throughput, --precision bf16",
                speed_bf16,
                "samples/s",
                baseline,
                "book-style fp32 step",
                speed_bf16 / baseline,
                "",
                None,
                "for reference: bf16 autocast is what auto would pick with AMX",
            ),
            Figure(
                "validation Dice",
                dice,
                "",
                dice_fp32,
                "our loop, fp32 contiguous, same data and seed",
                None,
                ">= the fp32 run's - 0.02",
                dice >= dice_fp32 - 0.02,
                note=(
                    f"per-nodule recall {ours.metrics['val']['nodule_recall']:.2f} "
                    f"(fp32 contiguous run {fp32.metrics['val']['nodule_recall']:.2f})"
                ),
            ),
        ],
    )
