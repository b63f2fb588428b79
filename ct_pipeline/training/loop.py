"""The one training loop behind `ct train-cls` and `ct train-seg`, readable top to bottom.

:func:`train` sets up the process (threads, DDP, the --out lock, logs, the cache); ``_train`` runs
the stages, each a function below in the order they happen:

    _resume_or_start -> _build_learner (model, optimizer) -> _restore -> _wrap_for_ranks (DDP)
    -> _datasets (DDP barriers around rank 0's _fill_cache) -> _loaders
    -> for each epoch, _epoch: _train_epoch, _validate, the epoch line, _save_checkpoints (rank 0)

One pass over a loader is :func:`ct_pipeline.training.epoch.run_epoch`.

Everything that differs between the apps lives in a task (:mod:`ct_pipeline.training.tasks`).
Runs on one CPU, one GPU, or many processes under torchrun (DDP). Speed on the CPU comes from the
channels-last memory format (and bf16 autocast on CPUs with AMX and on GPUs; BENCHMARKS.md);
the loop never waits on the device inside an epoch except where a comment says so.
"""

from __future__ import annotations

import math
import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ct_pipeline.atomic import atomic_write_text, check_writable
from ct_pipeline.cache import CropCache
from ct_pipeline.devices import resolve_precision
from ct_pipeline.errors import BadDataError
from ct_pipeline.logfile import open_log_file
from ct_pipeline.models import Checkpoint
from ct_pipeline.paths import resolve_cache_dir
from ct_pipeline.preemption import StopRequests
from ct_pipeline.threads import capped_workers, configure_worker_threads, thread_budget, torch_threads
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    setup_distributed,
    sync_buffers,
    teardown_distributed,
)
from ct_pipeline.training.epoch import EpochContext, StepUpdate, epoch_seed, run_epoch, seed_everything
from ct_pipeline.training.out_dir import check_inputs_kept, hold_out_dir
from ct_pipeline.training.run_log import RunLog, format_epoch_line
from ct_pipeline.training.state import (
    BEST,
    LAST,
    RunState,
    check_fresh_out_dir,
    open_resume_checkpoint,
    restore,
    save_run_checkpoint,
)
from ct_pipeline.training.tasks import Task, make_task, training_catalog


@dataclass(frozen=True)
class TrainResult:
    """What a finished run left behind.

    Attributes:
        out_dir: the run's folder.
        epochs: epochs completed in all (resumed runs count the earlier ones).
        samples_seen: training samples over all ranks.
        best_metric: the validation metric ``best.ckpt`` was chosen by (higher is better).
        best_value: its best value (-inf when never validated).
        best_epoch: the epoch of ``best.ckpt`` (0: none).
        metrics: the last epoch's {"train": {...}, "val": {...}}.
        precision: the precision actually used ("fp32", "bf16", "fp16").
        samples_per_s: training throughput of the last epoch (loader included), all ranks.
        epoch_samples_per_s: the same for each epoch this call trained, in order.
    """

    out_dir: Path
    epochs: int
    samples_seen: int
    best_metric: str
    best_value: float
    best_epoch: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    precision: str = "fp32"
    samples_per_s: float = 0.0
    epoch_samples_per_s: tuple[float, ...] = ()

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / BEST


def train(config: TrainConfig, log_out=None) -> TrainResult:
    """Train as ``config`` says; under torchrun, every rank calls this.

    Args:
        config: the run.
        log_out: where rank 0 prints (default stdout). Every rank also appends its lines to
            ``<out>/logs/rank-<R>.log``.

    Raises:
        BadInputError, BadDataError, BadCheckpointError: one-line problems with the options,
            the data or the checkpoints (see their messages).
        Terminated: SIGTERM or SIGUSR1 arrived (called from the main thread); the run stopped
            after its current step, and ``last.ckpt`` holds the last complete epoch.
    """
    config.check_inputs_exist()
    budget = thread_budget(config.threads)
    check_inputs_kept(config)
    if config.workers > 1:
        config = replace(config, workers=capped_workers(config.workers, "--workers"))
    check_writable(config.out_dir, "--out", is_folder=True)  # now, not when the first epoch ends
    ctx = setup_distributed(config.device)
    try:
        # every rank appends to its own file: rank 0's console lines, and what each rank warns
        with (
            hold_out_dir(config, ctx),
            open_log_file(config.out_dir / "logs" / f"rank-{ctx.rank}.log", f"rank {ctx.rank}") as log_file,
            StopRequests() as stop,
            torch_threads(budget.threads),
            closing(CropCache(resolve_cache_dir(config.cache_dir))) as cache,
        ):
            run_log = RunLog(config.out_dir, enabled=ctx.is_main, out=log_out, log_file=log_file)
            run_log.message(budget.describe(config.workers, "loader worker"))
            try:
                return _train(config, ctx, run_log, stop, cache)
            finally:
                run_log.close()  # flushes TensorBoard even when the run fails or is interrupted
    finally:
        teardown_distributed(ctx)


def _train(config: TrainConfig, ctx: DistContext, run_log: RunLog, stop: StopRequests, cache: CropCache) -> TrainResult:
    """The run's stages, in the order they happen on every rank."""
    task = make_task(config)
    run = EpochContext(task, ctx, resolve_precision(config.precision, ctx.device, "train"), stop)
    # the checkpoint is read before anything is built, so bad options fail fast
    checkpoint = _resume_or_start(config)
    learner = _build_learner(config, run, checkpoint)
    state = _restore(config, checkpoint, learner, run_log, ctx) if checkpoint is not None else RunState()
    if state.epoch >= config.epochs:
        run_log.message(f"already trained {state.epoch} epochs; pass --epochs > {state.epoch} to train more")
        return _result(config, task, state, {}, run.precision, [])
    learner = _wrap_for_ranks(learner, ctx)
    train_set, val_set = _datasets(config, task, ctx, cache)
    train_loader, val_loader = _loaders(config, task, ctx, train_set, val_set)
    n_val = int(all_reduce_sum(torch.tensor(len(val_set), device=ctx.device), ctx))  # ranks' shares differ
    run_log.message(
        f"{config.run_name}: {config.task} on {ctx.device} x{ctx.world_size}, {run.precision}, "
        f"{len(train_set) * ctx.world_size:,} training samples/epoch, {n_val:,} validation samples, "
        f"batch {config.batch_size}/rank, {learner.n_trained:,} trained parameters"
    )
    data = _Data(train_set, val_set, train_loader, val_loader, n_val)
    metrics: dict[str, dict[str, float]] = {}
    throughput: list[float] = []
    for epoch in range(state.epoch + 1, config.epochs + 1):
        metrics, samples_per_s = _epoch(config, run, learner, data, state, run_log, epoch)
        throughput.append(samples_per_s)
    return _result(config, task, state, metrics, run.precision, throughput)


# -- the stages ------------------------------------------------------------------------------


@dataclass
class _Learner:
    """The network and what changes it on this rank: ``model`` bare, ``wrapped`` for DDP (or the
    same model), the optimizer and the fp16 loss scaler."""

    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    n_trained: int


@dataclass(frozen=True)
class _Data:
    train_set: Any
    val_set: Any
    train_loader: DataLoader
    val_loader: DataLoader
    n_val: int  # validation samples over all ranks


def _resume_or_start(config: TrainConfig) -> Checkpoint | None:
    """``last.ckpt`` to resume from (checked against the options), or None for a fresh run in an empty --out."""
    if config.resume:
        return open_resume_checkpoint(config)
    check_fresh_out_dir(config.out_dir)
    return None


def _build_learner(config: TrainConfig, run: EpochContext, checkpoint: Checkpoint | None) -> _Learner:
    """The model with the same initial weights on every rank (DDP also copies rank 0's at wrap time)."""
    torch.manual_seed(config.seed)
    model = run.task.build_model()
    model.to(run.ctx.device, memory_format=run.task.memory_format)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    # Loss scaling only matters for fp16's narrow range; bf16 and fp32 need none.
    scaler = torch.amp.GradScaler(run.ctx.device.type, enabled=run.precision == "fp16")
    return _Learner(model, model, optimizer, scaler, sum(p.numel() for p in trainable))


def _restore(
    config: TrainConfig, checkpoint: Checkpoint, learner: _Learner, run_log: RunLog, ctx: DistContext
) -> RunState:
    """Weights, optimizer and where the run stood, from ``checkpoint``."""
    state = restore(checkpoint, learner.model, learner.optimizer, learner.scaler, ctx.world_size)
    run_log.message(f"resuming {config.out_dir} after epoch {state.epoch} ({state.samples_seen:,} samples)")
    return state


def _wrap_for_ranks(learner: _Learner, ctx: DistContext) -> _Learner:
    if ctx.is_distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        learner = replace(learner, wrapped=DistributedDataParallel(learner.model, device_ids=device_ids))
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes in training: let cuDNN pick kernels
    return learner


def _datasets(config: TrainConfig, task: Task, ctx: DistContext, cache: CropCache) -> tuple[Any, Any]:
    """The training and validation sets; rank 0 first, so that missing cache entries are filled
    once, not by every rank."""
    if not ctx.is_main:
        barrier(ctx)  # wait here until rank 0 has built its datasets
    catalog = training_catalog(config)
    train_set, val_set = task.build_datasets(catalog, cache, ctx)
    if ctx.is_main:
        _fill_cache(config, train_set, val_set)
    if ctx.is_main and ctx.is_distributed:
        barrier(ctx)  # let the other ranks go
    return train_set, val_set


def _fill_cache(config: TrainConfig, train_set: Any, val_set: Any) -> None:
    """Fill what the cache lacks now, before the first step: an unreadable series then refuses
    the run at its start, not hours into it; and with several ranks it is filled once, not by
    every rank (safe, see CropCache.get, but N times the work)."""
    unreadable: dict[str, str] = {}
    for dataset in (train_set, val_set):
        unreadable |= dataset.regions.fill_missing()
    if unreadable:
        raise BadDataError(_unreadable_message(unreadable, config.out_dir))


def _loaders(
    config: TrainConfig, task: Task, ctx: DistContext, train_set: Any, val_set: Any
) -> tuple[DataLoader, DataLoader]:
    loader_options: dict[str, Any] = {
        "num_workers": config.workers,
        "pin_memory": ctx.device.type == "cuda",
        "worker_init_fn": configure_worker_threads if config.workers else None,
        "collate_fn": task.collate_fn,
    }
    # The datasets draw each epoch's order themselves (set_epoch), so the loaders never shuffle.
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=False, **loader_options)
    val_batches = task.val_batches(val_set, config.batch_size)
    val_loader = (
        DataLoader(val_set, batch_sampler=val_batches, **loader_options)
        if val_batches is not None
        else DataLoader(val_set, batch_size=config.batch_size, **loader_options)
    )
    return train_loader, val_loader


def _epoch(
    config: TrainConfig, run: EpochContext, learner: _Learner, data: _Data, state: RunState, run_log: RunLog, epoch: int
) -> tuple[dict[str, dict[str, float]], float]:
    """Train one epoch, validate when due, log, checkpoint (rank 0); returns its metrics and training samples/s."""
    started = time.perf_counter()
    train_metrics, samples_per_s = _train_epoch(config, run, learner, data, state, run_log, epoch)
    metrics = {"train": train_metrics}
    if epoch % config.val_every == 0 or epoch == config.epochs:
        metrics["val"] = _validate(run, learner, data, state, run_log, epoch)
    is_best = "val" in metrics and metrics["val"].get(run.task.best_metric, math.nan) > state.best_value
    if is_best:
        state.best_value, state.best_epoch = metrics["val"][run.task.best_metric], epoch
    if "val" in metrics:
        run_log.scalars("val", metrics["val"], state.samples_seen)
    seconds = time.perf_counter() - started
    run_log.epoch_line(
        format_epoch_line(epoch, config.epochs, metrics, run.task.summary_keys, seconds, samples_per_s, is_best)
    )
    if run.ctx.is_main:
        _save_checkpoints(config, learner, state, metrics, run.ctx, is_best)
        run_log.flush()
    return metrics, samples_per_s


def _train_epoch(
    config: TrainConfig, run: EpochContext, learner: _Learner, data: _Data, state: RunState, run_log: RunLog, epoch: int
) -> tuple[dict[str, float], float]:
    """One training pass; advances ``state`` and logs; returns the metrics and samples/s (loader included)."""
    started = time.perf_counter()
    ctx = run.ctx
    # Every random draw of the epoch follows from (seed, epoch, rank): a resumed run repeats it.
    seed_everything(config.seed, epoch, ctx.rank)
    data.train_set.set_epoch(epoch)
    generator = None
    if config.augmentation.enabled():
        generator = torch.Generator(device=ctx.device).manual_seed(epoch_seed(config.seed, epoch, ctx.rank, 1))
    run.task.train_mode(learner.model)
    update = StepUpdate(learner.optimizer, learner.scaler, generator)
    with run_log.progress(f"epoch {epoch} train", len(data.train_set) * ctx.world_size) as progress:
        meter = run_epoch(run, learner.wrapped, data.train_loader, progress, update, epoch=epoch)
    sync_buffers(learner.model, ctx)
    metrics, extras = run.task.summarize(meter, ctx)  # a sync point: totals over ranks
    samples = int(metrics["n"])
    samples_per_s = samples / max(time.perf_counter() - started, 1e-9)
    state.samples_seen += samples
    state.epoch = epoch
    run_log.scalars("train", metrics, state.samples_seen)
    run_log.scalars("train", {"samples_per_s": samples_per_s}, state.samples_seen)
    _log_extras(run_log, "train", extras, state.samples_seen)
    return metrics, samples_per_s


def _validate(
    run: EpochContext, learner: _Learner, data: _Data, state: RunState, run_log: RunLog, epoch: int
) -> dict[str, float]:
    learner.model.eval()
    data.val_set.set_epoch(epoch)
    with run_log.progress(f"epoch {epoch} val", data.n_val) as progress, torch.no_grad():
        # The bare model, not the DDP wrapper: ranks hold different numbers of validation
        # batches, and DDP's per-forward buffer broadcast would wait for the others forever.
        meter = run_epoch(run, learner.model, data.val_loader, progress, keep_examples=run.ctx.is_main)
    metrics, extras = run.task.summarize(meter, run.ctx)
    _log_extras(run_log, "val", extras, state.samples_seen)
    return metrics


def _save_checkpoints(
    config: TrainConfig, learner: _Learner, state: RunState, metrics: dict, ctx: DistContext, is_best: bool
) -> None:
    for name in (LAST, BEST) if is_best else (LAST,):
        model, optimizer, scaler = learner.model, learner.optimizer, learner.scaler
        save_run_checkpoint(config.out_dir / name, model, optimizer, scaler, config, state, metrics, ctx.world_size)


# -- helpers ---------------------------------------------------------------------------------


def _unreadable_message(unreadable: dict[str, str], out_dir: Path) -> str:
    """One line naming the unreadable series; their UIDs also go to ``OUT/unreadable-series.txt``."""
    listing = out_dir / "unreadable-series.txt"
    atomic_write_text(listing, "".join(f"{uid}\n" for uid in sorted(unreadable)))
    first_uid = sorted(unreadable)[0]
    more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
    return (
        f"{len(unreadable)} series cannot be read, so training does not start: {first_uid} ({unreadable[first_uid]}){more}; "
        f"repair or remove them, or leave them out with --exclude-series {listing} (their UIDs, one per line)"
    )


def make_optimizer(config: TrainConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _log_extras(run_log: RunLog, split: str, extras: dict[str, Any], step: int) -> None:
    if "labels" in extras:
        run_log.classification_curves(split, extras["labels"], extras["probabilities"], step)
    if extras.get("examples"):
        run_log.segmentation_examples(split, extras["examples"], step)


def _result(
    config: TrainConfig, task: Task, state: RunState, metrics: dict, precision: str, throughput: list[float]
) -> TrainResult:
    return TrainResult(
        out_dir=config.out_dir,
        epochs=state.epoch,
        samples_seen=state.samples_seen,
        best_metric=task.best_metric,
        best_value=state.best_value,
        best_epoch=state.best_epoch,
        metrics=metrics,
        precision=precision,
        samples_per_s=throughput[-1] if throughput else 0.0,
        epoch_samples_per_s=tuple(throughput),
    )
