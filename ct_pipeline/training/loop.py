"""The one training loop behind `ct train-cls` and `ct train-seg`, readable top to bottom.

    config -> processes and device -> resume or start -> model -> optimizer -> data
    -> for each epoch: train, validate, log and checkpoint (rank 0)

Everything that differs between the apps lives in a task (:mod:`ct_pipeline.training.tasks`).
Runs on one CPU, one GPU, or many processes under torchrun (DDP). Speed on the CPU comes from the
channels-last memory format (and bf16 autocast on CPUs with AMX and on GPUs; BENCHMARKS.md);
the loop never waits on the device inside an epoch except where a comment says so.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import open_catalog
from ct_pipeline.atomic import atomic_write_text, check_writable
from ct_pipeline.devices import autocast, resolve_precision
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.logfile import open_log_file
from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots
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
from ct_pipeline.training.tasks import Task, make_task

# Test hook: when set, every rank writes the SHA-256 of its final weights to <dir>/rank<k>.sha256
# (the DDP test checks that all ranks end with identical weights).
WEIGHTS_HASH_DIR_ENV = "CT_TRAIN_WEIGHTS_HASH_DIR"


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
    task = make_task(config)
    precision = resolve_precision(config.precision, ctx.device, "train")

    # -- resume or start: the checkpoint is read before anything is built, so bad options fail fast
    checkpoint = open_resume_checkpoint(config) if config.resume else None
    if checkpoint is None:
        check_fresh_out_dir(config.out_dir)

    # -- model: the same initial weights on every rank (DDP also copies rank 0's at wrap time)
    torch.manual_seed(config.seed)
    model = task.build_model()
    model.to(ctx.device, memory_format=task.memory_format)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    # Loss scaling only matters for fp16's narrow range; bf16 and fp32 need none.
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    state = RunState()
    if checkpoint is not None:
        state = restore(checkpoint, model, optimizer, scaler, ctx.world_size)
        run_log.message(f"resuming {config.out_dir} after epoch {state.epoch} ({state.samples_seen:,} samples)")
        if state.epoch >= config.epochs:
            run_log.message(f"already trained {state.epoch} epochs; pass --epochs > {state.epoch} to train more")
            return _result(config, task, state, {}, precision, [])
    ddp_model: nn.Module = model
    if ctx.is_distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes in training: let cuDNN pick kernels

    # -- data: rank 0 first, so that missing cache entries are filled once, not by every rank
    cache_dir = resolve_cache_dir(config.cache_dir)
    if not ctx.is_main:
        barrier(ctx)  # wait here until rank 0 has built its datasets
    catalog = open_catalog(resolve_data_roots(config.data_roots), cache_dir, config.classification.extra_candidates).excluding(
        config.exclude_series
    )
    train_set, val_set = task.build_datasets(catalog, cache, ctx)
    if ctx.is_main:
        # Fill what the cache lacks now, before the first step: an unreadable series then refuses
        # the run at its start, not hours into it; and with several ranks it is filled once, not
        # by every rank (safe, see CropCache.get, but N times the work).
        unreadable: dict[str, str] = {}
        for dataset in (train_set, val_set):
            unreadable |= dataset.regions.fill_missing()
        if unreadable:
            raise BadDataError(_unreadable_message(unreadable, config.out_dir))
    if ctx.is_main and ctx.is_distributed:
        barrier(ctx)  # let the other ranks go
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
    n_val = int(all_reduce_sum(torch.tensor(len(val_set), device=ctx.device), ctx))  # ranks' shares differ
    run_log.message(
        f"{config.run_name}: {config.task} on {ctx.device} x{ctx.world_size}, {precision}, "
        f"{len(train_set) * ctx.world_size:,} training samples/epoch, {n_val:,} validation samples, "
        f"batch {config.batch_size}/rank, {sum(p.numel() for p in trainable):,} trained parameters"
    )

    # -- the loop
    metrics: dict[str, dict[str, float]] = {}
    throughput: list[float] = []
    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        # Every random draw of the epoch follows from (seed, epoch, rank): a resumed run repeats it.
        seed_everything(config.seed, epoch, ctx.rank)
        train_set.set_epoch(epoch)
        generator = None
        if config.augmentation.enabled():
            generator = torch.Generator(device=ctx.device).manual_seed(epoch_seed(config.seed, epoch, ctx.rank, 1))
        task.train_mode(model)
        with run_log.progress(f"epoch {epoch} train", len(train_set) * ctx.world_size) as progress:
            meter = run_epoch(
                task, ddp_model, train_loader, ctx, precision, progress, optimizer, scaler, generator, stop=stop, epoch=epoch
            )
        sync_buffers(model, ctx)
        train_metrics, train_extras = task.summarize(meter, ctx)  # a sync point: totals over ranks
        train_seconds = time.perf_counter() - started
        epoch_samples = int(train_metrics["n"])
        samples_per_s = epoch_samples / max(train_seconds, 1e-9)
        throughput.append(samples_per_s)
        state.samples_seen += epoch_samples
        state.epoch = epoch
        metrics = {"train": train_metrics}
        run_log.scalars("train", train_metrics, state.samples_seen)
        run_log.scalars("train", {"samples_per_s": samples_per_s}, state.samples_seen)
        _log_extras(run_log, "train", train_extras, state.samples_seen)

        if epoch % config.val_every == 0 or epoch == config.epochs:
            model.eval()
            val_set.set_epoch(epoch)
            with run_log.progress(f"epoch {epoch} val", n_val) as progress, torch.no_grad():
                # The bare model, not the DDP wrapper: ranks hold different numbers of validation
                # batches, and DDP's per-forward buffer broadcast would wait for the others forever.
                meter = run_epoch(task, model, val_loader, ctx, precision, progress, keep_examples=ctx.is_main, stop=stop)
            val_metrics, extras = task.summarize(meter, ctx)
            metrics["val"] = val_metrics
            _log_extras(run_log, "val", extras, state.samples_seen)
        is_best = "val" in metrics and metrics["val"].get(task.best_metric, math.nan) > state.best_value
        if is_best:
            state.best_value, state.best_epoch = metrics["val"][task.best_metric], epoch
        if "val" in metrics:
            run_log.scalars("val", metrics["val"], state.samples_seen)
        run_log.epoch_line(
            format_epoch_line(
                epoch, config.epochs, metrics, task.summary_keys, time.perf_counter() - started, samples_per_s, is_best
            )
        )
        if ctx.is_main:
            save_run_checkpoint(config.out_dir / LAST, model, optimizer, scaler, config, state, metrics, ctx.world_size)
            if is_best:
                save_run_checkpoint(config.out_dir / BEST, model, optimizer, scaler, config, state, metrics, ctx.world_size)
            run_log.flush()

    _write_weights_hash(model, ctx)
    return _result(config, task, state, metrics, precision, throughput)


def run_epoch(
    task: Task,
    model: nn.Module,
    loader: DataLoader,
    ctx: DistContext,
    precision: str,
    progress: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
    keep_examples: bool = False,
    stop: StopRequests | None = None,
    epoch: int = 0,
) -> Any:
    """One pass over ``loader``: training when an optimizer is given, else evaluation (call it
    under ``torch.no_grad()``). Returns the task's meter of the epoch.

    Raises:
        Terminated: ``stop`` was requested; raised after the step in progress, once the
            loader's workers are shut down.
        BadInputError: a training step's loss is not finite (the run diverged); ``epoch`` is
            named in the message.
    """
    training = optimizer is not None
    meter = task.new_meter(ctx.device, "train" if training else "val", keep_examples)
    batches = iter(loader)
    try:
        for step, raw in enumerate(batches, start=1):
            batch = task.to_device(raw, ctx.device)
            if training and generator is not None:
                batch = task.augment(batch, generator)
            inputs = batch.inputs.contiguous(memory_format=task.memory_format)
            with autocast(precision, ctx.device):
                outputs = model(inputs)
            losses = task.losses(outputs, batch)  # (N,) float32, outside autocast
            if training:
                loss = losses.mean()
                # A sync point on a GPU, once per step: a NaN step would poison the weights that the
                # next checkpoint saves, so it is caught before the optimizer applies it.
                if not bool(torch.isfinite(loss)):
                    raise _diverged(epoch, step, loss, optimizer)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            task.record(meter, outputs, batch, losses)
            progress.advance(len(losses) * ctx.world_size, losses)
            if stop is not None:
                stop.check()
    finally:
        # A traceback keeps this frame, and so the iterator and its worker processes, alive until
        # the exception is dropped: shut the workers down now, so nothing outlives the run.
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    return meter


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


def _diverged(epoch: int, step: int, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> BadInputError:
    lr = optimizer.param_groups[0]["lr"]
    return BadInputError(
        f"training diverged at epoch {epoch}, step {step}: the loss is {float(loss.detach())}; the learning rate "
        f"(--lr {lr:g}) is probably too high for this model and batch size: lower it (e.g. 10x) and start "
        "again (last.ckpt keeps the last epoch that finished)"
    )


def make_optimizer(config: TrainConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


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


def _write_weights_hash(model: nn.Module, ctx: DistContext) -> None:
    folder = os.environ.get(WEIGHTS_HASH_DIR_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{ctx.rank}.sha256").write_text(weights_digest(model) + "\n")


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
