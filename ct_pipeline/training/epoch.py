"""One pass over a loader (:func:`run_epoch`), and the seeds that make every epoch repeatable.

The loop (:mod:`ct_pipeline.training.loop`) calls :func:`run_epoch` twice an epoch: to train, with
a :class:`StepUpdate`, and to validate, without. Every random draw of an epoch follows from
(seed, epoch, rank) (:func:`epoch_seed`), so a resumed run repeats the epochs it redoes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ct_pipeline.devices import autocast
from ct_pipeline.errors import BadInputError
from ct_pipeline.preemption import StopRequests
from ct_pipeline.training.distributed import DistContext
from ct_pipeline.training.tasks import Task


@dataclass(frozen=True)
class EpochContext:
    """What every pass of a run shares: the task, this rank, the autocast precision ("fp32",
    "bf16", "fp16") and the stop requests checked after each step (None: never stops)."""

    task: Task
    ctx: DistContext
    precision: str
    stop: StopRequests | None = None


@dataclass(frozen=True)
class StepUpdate:
    """How a training pass changes the weights: the optimizer, the loss scaler (fp16) and the
    augmentation's generator (None: no augmentation)."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator | None = None


def run_epoch(
    run: EpochContext,
    model: nn.Module,
    loader: DataLoader,
    progress: Any,
    update: StepUpdate | None = None,
    keep_examples: bool = False,
    epoch: int = 0,
) -> Any:
    """One pass over ``loader``: training with an ``update``, else evaluation (call it under
    ``torch.no_grad()``). Returns the task's meter of the epoch.

    Raises:
        Terminated: a stop was requested; raised after the step in progress, once the
            loader's workers are shut down.
        BadInputError: a training step's loss is not finite (the run diverged); ``epoch`` is
            named in the message.
    """
    task, ctx = run.task, run.ctx
    meter = task.new_meter(ctx.device, "train" if update is not None else "val", keep_examples)
    batches = iter(loader)
    try:
        for step, raw in enumerate(batches, start=1):
            batch = task.to_device(raw, ctx.device)
            if update is not None and update.generator is not None:
                batch = task.augment(batch, update.generator)
            inputs = batch.inputs.contiguous(memory_format=task.memory_format)
            with autocast(run.precision, ctx.device):
                outputs = model(inputs)
            losses = task.losses(outputs, batch)  # (N,) float32, outside autocast
            if update is not None:
                _step(update, losses.mean(), epoch, step)
            task.record(meter, outputs, batch, losses)
            progress.advance(len(losses) * ctx.world_size, losses)
            if run.stop is not None:
                run.stop.check()
    finally:
        # A traceback keeps this frame, and so the iterator and its worker processes, alive until
        # the exception is dropped: shut the workers down now, so nothing outlives the run.
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    return meter


def _step(update: StepUpdate, loss: torch.Tensor, epoch: int, step: int) -> None:
    # A sync point on a GPU, once per step: a NaN step would poison the weights that the next
    # checkpoint saves, so it is caught before the optimizer applies it.
    if not bool(torch.isfinite(loss)):
        raise _diverged(epoch, step, loss, update.optimizer)
    update.optimizer.zero_grad(set_to_none=True)
    update.scaler.scale(loss).backward()
    update.scaler.step(update.optimizer)
    update.scaler.update()


def _diverged(epoch: int, step: int, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> BadInputError:
    lr = optimizer.param_groups[0]["lr"]
    return BadInputError(
        f"training diverged at epoch {epoch}, step {step}: the loss is {float(loss.detach())}; the learning rate "
        f"(--lr {lr:g}) is probably too high for this model and batch size: lower it (e.g. 10x) and start "
        "again (last.ckpt keeps the last epoch that finished)"
    )


def epoch_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed that is a pure function of its arguments (and differs between them)."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    """Seed the global generators (torch, numpy, random) for one epoch of one rank.

    The datasets and augmentation use their own generators; this covers the rest, such as the
    seeds torch gives DataLoader workers.
    """
    value = epoch_seed(seed, epoch, rank)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state (parameters and buffers, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
