"""What a run tells the user: TensorBoard, one console line per epoch, progress (rank 0), and a
log file per rank.

(Named ``run_log`` rather than ``logging`` so that it never shadows the standard library's module.)

TensorBoard: ``<out>/tensorboard/train`` and ``<out>/tensorboard/val`` (two writers, so the
train and validation curves of a metric share one chart), step = training samples seen.
Progress: a rich bar while stdout is a terminal; otherwise (batch jobs, pipes) a plain line
every ``plain_every_s`` seconds, so log files stay readable.
Log file: every rank copies its console lines (those rank 0 prints) and the periodic progress
lines into ``<out>/logs/rank-<R>.log`` (:mod:`ct_pipeline.logfile`), so a hung or failed rank
can be told apart from the others.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from ct_pipeline.logfile import NO_LOG_FILE, LogFile


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def format_epoch_line(
    epoch: int,
    epochs: int,
    metrics: Mapping[str, Mapping[str, float]],
    keys: Sequence[str],
    seconds: float,
    samples_per_s: float,
    best: bool,
) -> str:
    """e.g. ``epoch 3/10 | train loss 0.31 ... | val loss 0.28 ... tp 40 fp 12 fn 3 tn 930 | 71 samples/s 4m12s *best``."""
    parts = [f"epoch {epoch}/{epochs}"]
    for split, values in metrics.items():
        shown = " ".join(f"{key} {_fmt(values[key])}" for key in keys if key in values)
        if split == "val" and "tn" in values:
            shown += " [" + " ".join(f"{k} {int(values[k])}" for k in ("tp", "fp", "fn", "tn")) + "]"
        parts.append(f"{split} {shown}")
    minutes, secs = divmod(int(round(seconds)), 60)
    parts.append(f"{samples_per_s:,.0f} samples/s {minutes}m{secs:02d}s" + (" *best" if best else ""))
    return " | ".join(parts)


class Progress:
    """Counts samples through one epoch phase and shows it (bar or periodic plain lines).

    ``out`` None: nothing on the console (ranks other than 0); the plain lines still go to ``log_file``.
    """

    def __init__(
        self,
        label: str,
        total: int,
        out: TextIO | None,
        interactive: bool,
        plain_every_s: float,
        log_file: LogFile = NO_LOG_FILE,
    ) -> None:
        self.label, self.total, self.out, self.log_file = label, total, out, log_file
        self.done = 0
        self.started = time.perf_counter()
        self._plain_every_s = plain_every_s
        self._last_print = self.started
        self._loss: torch.Tensor | None = None
        self._bar = None
        if interactive and out is not None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=out),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="")

    def advance(self, n: int, loss: torch.Tensor | None = None) -> None:
        """``n`` more samples done; ``loss`` (a device tensor) is read only when a line is printed."""
        self.done += n
        self._loss = loss if loss is not None else self._loss
        now = time.perf_counter()
        rate = self.done / max(now - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate:,.0f} samples/s")
        console_lines = self._bar is None and self.out is not None
        if (console_lines or self.log_file.path is not None) and now - self._last_print >= self._plain_every_s:
            self._last_print = now
            # .item() waits for the device: done only here, once per printed line
            loss_text = f" loss {self._loss.mean().item():.4f}" if self._loss is not None else ""
            line = f"{self.label} {self.done}/{self.total} samples, {rate:,.0f} samples/s{loss_text}"
            if console_lines:
                self.out.write(line + "\n")
                self.out.flush()
            self.log_file.line(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class _NoProgress:
    def advance(self, n: int, loss: torch.Tensor | None = None) -> None:
        pass


class RunLog:
    """Rank 0's view of the run; on other ranks (``enabled=False``) only the log file is written."""

    def __init__(
        self,
        out_dir: Path,
        enabled: bool,
        out: TextIO | None = None,
        plain_every_s: float = 30.0,
        log_file: LogFile = NO_LOG_FILE,
    ) -> None:
        self.out_dir = out_dir
        self.enabled = enabled
        self.log_file = log_file
        self.out = out or sys.stdout
        self.interactive = enabled and self.out.isatty()
        self.plain_every_s = plain_every_s
        self._writers: dict[str, Any] = {}

    def message(self, text: str) -> None:
        """A console line (rank 0), copied to every rank's log file."""
        if self.enabled:
            self.out.write(text + "\n")
            self.out.flush()
        self.log_file.line(text)

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Progress | _NoProgress]:
        if not self.enabled and self.log_file.path is None:
            yield _NoProgress()
            return
        out = self.out if self.enabled else None
        bar = Progress(label, total, out, self.interactive, self.plain_every_s, self.log_file)
        try:
            yield bar
        finally:
            bar.close()

    def writer(self, split: str):
        """The TensorBoard writer of ``split`` (created on first use: TensorBoard is slow to import)."""
        if split not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[split] = SummaryWriter(log_dir=str(self.out_dir / "tensorboard" / split))
        return self._writers[split]

    def scalars(self, split: str, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        writer = self.writer(split)
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)

    def classification_curves(self, split: str, labels: np.ndarray, probabilities: np.ndarray, step: int) -> None:
        """PR curve, and histograms of the predicted probability of class 1 for each true class."""
        if not self.enabled or len(labels) == 0:
            return
        writer = self.writer(split)
        writer.add_pr_curve("pr", labels.astype(bool), probabilities, step)
        for name, mask in (("probability/label_negative", labels == 0), ("probability/label_positive", labels == 1)):
            if mask.any():
                writer.add_histogram(name, probabilities[mask], step, bins=np.linspace(0.0, 1.0, 51))

    def segmentation_examples(self, split: str, examples: Sequence[tuple[torch.Tensor, ...]], step: int) -> None:
        """Slices with label (green) and prediction (red) over the CT (grey): overlap is yellow."""
        if not self.enabled:
            return
        writer = self.writer(split)
        for k, (image_hu, label, predicted) in enumerate(examples):
            writer.add_image(f"example_{k}", overlay(image_hu, label, predicted), step, dataformats="CHW")

    def epoch_line(self, line: str) -> None:
        self.message(line)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def overlay(image_hu: torch.Tensor, label: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1]: lung window (-1000..400 HU) grey, label green, prediction red."""
    grey = np.clip((image_hu.numpy() + 1000.0) / 1400.0, 0.0, 1.0) * 0.7
    red = grey + 0.5 * predicted.numpy()
    green = grey + 0.5 * label.numpy()
    return np.clip(np.stack([red, green, grey]), 0.0, 1.0).astype(np.float32)
