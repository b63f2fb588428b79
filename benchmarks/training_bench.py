"""What the two training benchmarks share: the timed book-style loop, our `train()` runs, and the
alternating speed rounds (the machine may be shared, so each side keeps its best round)."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from ct_pipeline.training import TrainConfig, train
from ct_pipeline.training.loop import TrainResult

WARMUP_BATCHES = 2  # the first batches pay worker start-up and kernel selection; ours is timed warm too


@dataclass(frozen=True)
class TrainBench:
    """One training benchmark's set-up (sizes in samples; ``task`` as for `TrainConfig.for_task`)."""

    task: str
    n_series: int
    seed: int
    val_stride: int
    batch: int
    workers: int
    rounds: int
    speed_epochs: int
    speed_epoch_size: int
    quality_epochs: int
    quality_epoch_size: int

    def setup_text(self, precision: str, sample: str, baseline: str, baseline_batches: int) -> str:
        """The benchmark's set-up sentence for BENCHMARKS.md; ``sample`` names one sample ("samples", "crops")."""
        return (
            f"{self.n_series} `ct synth --size small` series (validation: every {self.val_stride}-th), cache warm; "
            f"batch {self.batch}, {self.workers} DataLoader worker; ours: train() epochs of {self.speed_epoch_size} "
            f"{sample}, wall time of an epoch after the first (loader, augmentation, metrics included), precision "
            f"{precision} (auto); baseline: {baseline}, timed over {baseline_batches} batches after {WARMUP_BATCHES} "
            f"warm-up batches; best of {self.rounds} alternating rounds each. Quality: {self.quality_epochs} epochs of "
            f"{self.quality_epoch_size} {sample}"
        )


@dataclass(frozen=True)
class TrainMeasured:
    """Best samples/s of each side, and the two quality runs (ours as users run it, fp32 contiguous)."""

    baseline: float
    speed: float
    speed_bf16: float
    ours: TrainResult
    fp32: TrainResult
    precision: str  # what "auto" picked for ours
    variants: dict[str, TrainResult]  # the quality runs of the options compared beside the default


def book_style_samples_per_s(
    loader,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[torch.nn.Module, object, object], torch.Tensor],
) -> float:
    """Train ``model`` over ``loader`` the book's way (one plain step per batch); samples/s after the warm-up."""
    model.train()
    started, seen = 0.0, 0
    for step, (inputs, labels) in enumerate(loader):
        if step == WARMUP_BATCHES:
            started, seen = time.perf_counter(), 0
        optimizer.zero_grad()
        loss_of(model, inputs, labels).backward()
        optimizer.step()
        seen += len(inputs)
    return seen / (time.perf_counter() - started)


def _run_ours(
    bench: TrainBench, data_root: Path, cache_dir: Path, out: Path, epochs: int, epoch_size: int, **options
) -> TrainResult:
    config = TrainConfig.for_task(
        bench.task,
        data_roots=(data_root,),
        cache_dir=cache_dir,
        out_dir=out,
        epochs=epochs,
        epoch_size=epoch_size,
        val_stride=bench.val_stride,
        device="cpu",
        **{"batch_size": bench.batch, "workers": bench.workers, **options},  # a variant may set its own batch
    )
    return train(config, log_out=io.StringIO())


def measure(
    bench: TrainBench, book_style: Callable[[Path, Path], float], variants: dict[str, dict] | None = None
) -> TrainMeasured:
    """Write the synthetic data, alternate ``book_style(data_root, cache_dir)`` with our loop
    (auto precision, then bf16) for ``bench.rounds`` rounds, then the two quality runs and one
    quality run per entry of ``variants`` (name -> `TrainConfig` options)."""
    with tempfile.TemporaryDirectory(prefix=f"ct-bench-train-{bench.task}-") as tmp:
        tmp_path = Path(tmp)
        data_root = tmp_path / "synth"
        write_synthetic_dataset(SynthConfig(out_dir=data_root, n_series=bench.n_series, seed=bench.seed, size="small"))
        cache_dir = tmp_path / "cache"

        def ours(out: str, epochs: int, epoch_size: int, **options) -> TrainResult:
            return _run_ours(bench, data_root, cache_dir, tmp_path / out, epochs, epoch_size, **options)

        baseline = speed = speed_bf16 = 0.0
        for k in range(bench.rounds):
            baseline = max(baseline, book_style(data_root, cache_dir))  # the first fills the cache
            timed = ours(f"speed{k}", bench.speed_epochs, bench.speed_epoch_size)
            speed = max(speed, *timed.epoch_samples_per_s[1:])  # epoch 1 pays start-up
            bf16 = ours(f"bf16-{k}", 2, bench.speed_epoch_size, precision="bf16")
            speed_bf16 = max(speed_bf16, bf16.epoch_samples_per_s[1])
        quality = (bench.quality_epochs, bench.quality_epoch_size)
        usual = ours("ours", *quality)
        fp32 = ours("fp32", *quality, precision="fp32", channels_last=False)
        compared = {
            name: ours(f"variant-{k}", *quality, **options)
            for k, (name, options) in enumerate((variants or {}).items())
        }
    return TrainMeasured(baseline, speed, speed_bf16, usual, fp32, timed.precision, compared)
