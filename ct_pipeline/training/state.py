"""A run's checkpoints: ``last.ckpt`` after every epoch, ``best.ckpt`` by the validation metric,
and resuming from ``last.ckpt``.

They are ordinary project checkpoints (:func:`ct_pipeline.models.save_checkpoint`: atomic,
``weights_only`` loading). What resuming needs beyond the weights rides in the checkpoint's
``optimizer_state`` as plain tensors and numbers::

    {"optimizer": optimizer.state_dict(), "grad_scaler": GradScaler.state_dict(),
     "best_value": float, "best_epoch": int, "world_size": int}

No random-generator state is stored because none is carried between epochs: every random
draw of an epoch (sample order, crops, augmentation, DataLoader worker seeds) is seeded from
(seed, epoch, rank) at the start of the epoch, so epoch k+1 of a resumed run draws what the
uninterrupted run drew.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.errors import BadCheckpointError, BadInputError
from ct_pipeline.models import Checkpoint, load_checkpoint, save_checkpoint
from ct_pipeline.models.checkpoints import load_state_checked, to_plain_data
from ct_pipeline.training.command import option_of_field
from ct_pipeline.training.config import (
    RESUMABLE_CHANGES,
    ClassificationTraining,
    MalignancyTraining,
    SegmentationTraining,
    TrainConfig,
    flat_fields,
)

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


@dataclass
class RunState:
    """Where the run stands (what ``last.ckpt`` records besides weights and optimizer)."""

    epoch: int = 0  # epochs completed
    samples_seen: int = 0  # training samples over all ranks
    best_value: float = float("-inf")
    best_epoch: int = 0


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def check_fresh_out_dir(out_dir: Path) -> None:
    """Refuse to start a new run over an existing one."""
    if (out_dir / LAST).exists():
        raise BadInputError(
            f"{out_dir} already holds a run ({LAST}); add --resume to continue it, or choose another --out"
        )


def open_resume_checkpoint(config: TrainConfig) -> Checkpoint:
    """``last.ckpt`` of ``config.out_dir``, checked to be this kind of run with the same options."""
    path = config.out_dir / LAST
    if not path.exists():
        raise BadInputError(
            f"--resume: {path} does not exist; start the run without --resume, or point --out at the run's folder"
        )
    checkpoint = load_checkpoint(path, config.kind, option="--resume")
    if checkpoint.optimizer_state is None or "optimizer" not in checkpoint.optimizer_state:
        raise BadCheckpointError(f"{path} holds no training state to resume from; start a new run with another --out")
    # An option newer than the checkpoint was, in effect, at its default when it was trained.
    stored = {**_plain_defaults(), **flat_fields(checkpoint.config)}
    if isinstance(stored.get("augmentation"), dict):  # augmentation settings newer than the checkpoint: off then
        stored["augmentation"] = {**to_plain_data(AugmentationConfig.off()), **stored["augmentation"]}
    current = flat_fields(to_plain_data(config))
    changed = sorted(key for key in current if key not in RESUMABLE_CHANGES and stored.get(key) != current[key])
    if changed:
        key = changed[0]
        may_change = ", ".join(option_of_field(name) for name in sorted(RESUMABLE_CHANGES - {"resume"}))
        raise BadInputError(
            f"--resume: {path} was trained with {option_of_field(key)} {stored.get(key)!r}, but this run asks for "
            f"{current[key]!r}; repeat the original options (only {may_change} may change)"
        )
    return checkpoint


def _plain_defaults() -> dict:
    """Fields with a default that is not the task's own, flat, as :func:`to_plain_data` writes them."""
    defaults = {}
    for owner in (TrainConfig, SegmentationTraining, ClassificationTraining, MalignancyTraining):
        for field in dataclasses.fields(owner):
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = to_plain_data({field.name: field.default})[field.name]
    return defaults


def restore(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    world_size: int,
) -> RunState:
    """Load weights and optimizer state from ``checkpoint``; return where the run stood."""
    built = to_plain_data(model.config.to_dict())
    # Keys an older checkpoint lacks take the built model's value. What the weights' shapes do not
    # show, e.g. a crop spacing "auto" resolved again on other --data-root series, must agree too.
    changed = sorted(key for key, value in checkpoint.model_config.items() if built.get(key) != value)
    if changed:
        key = changed[0]
        raise BadInputError(
            f"--resume: {checkpoint.path} holds a model with {key} {checkpoint.model_config[key]!r}, but this run "
            f"builds {built.get(key)!r}; resume on the data and options it was trained with, or start a new run"
        )
    load_state_checked(model, checkpoint.model_state, str(checkpoint.path))
    state = checkpoint.optimizer_state or {}
    try:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise BadCheckpointError(
            f"{checkpoint.path}: its optimizer state does not fit this model ({err}); start a new run"
        ) from err
    if state.get("world_size", world_size) != world_size:
        log.warning(
            "resuming a run trained on %s ranks with %d: the samples drawn per rank change from here on",
            state.get("world_size"),
            world_size,
        )
    return RunState(
        epoch=checkpoint.epoch,
        samples_seen=checkpoint.samples_seen,
        best_value=float(state.get("best_value", float("-inf"))),
        best_epoch=int(state.get("best_epoch", 0)),
    )


def save_run_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    state: RunState,
    metrics: dict[str, dict[str, float]],
    world_size: int,
) -> Path:
    """Write one checkpoint of the run (atomically: a kill leaves the previous file intact)."""
    training_state = {
        "optimizer": _to_cpu(optimizer.state_dict()),
        "grad_scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "best_value": float(state.best_value),
        "best_epoch": int(state.best_epoch),
        "world_size": int(world_size),
    }
    return save_checkpoint(
        path,
        model,
        kind=config.kind,
        optimizer_state=training_state,
        epoch=state.epoch,
        samples_seen=state.samples_seen,
        config=config,
        metrics=metrics,
    )
