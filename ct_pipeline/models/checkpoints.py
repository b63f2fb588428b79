"""Project checkpoints: one ``torch.save``'d dict of tensors and plain data.

Every checkpoint loads with ``torch.load(weights_only=True)``, so opening one never runs code.
Layout (format_version 1)::

    {"format": "ct-pipeline", "format_version": 1, "kind": "seg" | "cls" | "mal",
     "arch": str, "model_config": dict, "model_state": {name: tensor},
     "optimizer_state": dict | None, "epoch": int, "samples_seen": int,
     "config": dict (training config or provenance, plain data), "metrics": dict, "ct_version": str}

``save_checkpoint`` writes it atomically, ``load_checkpoint`` reads and validates it into a
:class:`Checkpoint`, ``build_model`` turns that into a ready network.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ct_pipeline import __version__
from ct_pipeline.atomic import atomic_path, write_failure
from ct_pipeline.errors import BadCheckpointError
from ct_pipeline.models.checkpoint_path import checkpoint_file, exported_format
from ct_pipeline.models.classifier import CLASSIFIER_ARCH, ClassifierConfig, LunaClassifier
from ct_pipeline.models.safe_load import load_torch_file
from ct_pipeline.models.unet import UNET_ARCH, SegmentationUNet, UNetConfig

FORMAT = "ct-pipeline"
FORMAT_VERSION = 1
KIND_NAMES = {"seg": "segmentation", "cls": "nodule classifier", "mal": "malignancy classifier"}
_ARCH_OF_KIND = {"seg": UNET_ARCH, "cls": CLASSIFIER_ARCH, "mal": CLASSIFIER_ARCH}
_BOOK_KIND_OF_MODEL_NAME = {"UNetWrapper": "seg", "LunaModel": "cls"}


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A validated project checkpoint (tensors on the CPU). Fields as in the module docstring."""

    path: Path
    kind: str
    arch: str
    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    epoch: int
    samples_seen: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    ct_version: str

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no tensors)."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "kind_name": KIND_NAMES[self.kind],
            "arch": self.arch,
            "model_config": self.model_config,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "metrics": self.metrics,
            "config": self.config,
            "ct_version": self.ct_version,
            "has_optimizer_state": self.optimizer_state is not None,
        }


def new_model(arch: str, model_config: Mapping[str, Any] | None = None) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` ("unet-wrapper" or "luna-classifier")."""
    config = dict(model_config or {})
    if arch == UNET_ARCH:
        return SegmentationUNet(UNetConfig.from_dict(config))
    if arch == CLASSIFIER_ARCH:
        return LunaClassifier(ClassifierConfig.from_dict(config))
    raise ValueError(f"unknown architecture {arch!r}; known: {UNET_ARCH!r}, {CLASSIFIER_ARCH!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BatchNorm statistics not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_plain_data(value: Any) -> Any:
    """``value`` as dicts/lists/str/int/float/bool/None, which ``weights_only`` loading accepts.

    Dataclasses become dicts, tuples lists, paths strings, enums their value, numpy and
    one-element tensor scalars Python numbers. Anything else raises TypeError.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): to_plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain_data(item) for item in value]
    if isinstance(value, enum.Enum):
        return to_plain_data(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint; convert it to plain data first")


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel/DataParallel or torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: os.PathLike | str,
    model: nn.Module,
    *,
    kind: str,
    optimizer_state: Mapping[str, Any] | None = None,
    epoch: int = 0,
    samples_seen: int = 0,
    config: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a SegmentationUNet or LunaClassifier, possibly DDP/compile-wrapped) atomically.

    Args:
        path: destination file; its folder is created.
        model: the network; its ``arch`` and ``config`` are recorded so ``build_model`` can rebuild it.
        kind: "seg", "cls" or "mal".
        optimizer_state: ``optimizer.state_dict()`` to resume training, or None.
        epoch: epochs completed.
        samples_seen: training samples seen so far.
        config: the training config (a dataclass or dict, stored as plain data) or provenance.
        metrics: validation metrics (plain numbers).

    Returns:
        The path written.
    """
    model = _unwrap(model)
    if kind not in KIND_NAMES:
        raise ValueError(f"kind must be one of {sorted(KIND_NAMES)}, got {kind!r}")
    arch = getattr(model, "arch", None)
    if arch != _ARCH_OF_KIND[kind]:
        raise ValueError(f"a {kind!r} checkpoint needs a {_ARCH_OF_KIND[kind]!r} model, got {type(model).__name__}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "arch": arch,
        "model_config": to_plain_data(model.config.to_dict()),
        # contiguous(): a channels-last model would otherwise save channels-last strides.
        "model_state": {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()},
        "optimizer_state": dict(optimizer_state) if optimizer_state is not None else None,
        "epoch": int(epoch),
        "samples_seen": int(samples_seen),
        "config": to_plain_data(config) if config is not None else {},
        "metrics": to_plain_data(metrics) if metrics is not None else {},
        "ct_version": __version__,
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch's zip writer reports a failed write (a full disk) this way
            raise write_failure(target, err) from err
    return target


def load_checkpoint(
    path: os.PathLike | str, expected_kind: str | None = None, *, option: str | None = None
) -> Checkpoint:
    """Read and validate a project checkpoint without running any code from it.

    Args:
        path: the checkpoint file.
        expected_kind: "seg", "cls" or "mal" to refuse a checkpoint of another kind; None accepts any.
        option: what asked for the file (e.g. "--seg-model"), quoted in the wrong-kind message.

    Raises:
        BadCheckpointError: missing, unreadable, unsafe, from the book's code, damaged, or of the wrong kind.
    """
    if expected_kind is not None and expected_kind not in KIND_NAMES:
        raise ValueError(f"expected_kind must be one of {sorted(KIND_NAMES)} or None, got {expected_kind!r}")
    path = Path(path)
    if path.is_dir():
        checkpoint_file(path, option or "checkpoint")  # says which checkpoint inside to pass
    fmt = exported_format(path)
    if fmt is not None:  # torch.load would call a TorchScript archive "pickled code", which misleads
        where = f"{option} needs" if option else "this command needs"
        raise BadCheckpointError(
            f"{path} is an exported {fmt} model (`ct models export`), not a checkpoint, and {where} a checkpoint; "
            "`ct diagnose` runs exported files, other commands take the .ckpt it was exported from."
        )
    data = load_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadCheckpointError(_not_ours_message(path, data))
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BadCheckpointError(
            f"{path} has checkpoint format_version {version!r} but this ct reads up to {FORMAT_VERSION}; "
            "upgrade ct to read it."
        )
    checkpoint = Checkpoint(
        path=path,
        kind=_field(path, data, "kind", str),
        arch=_field(path, data, "arch", str),
        model_config=_field(path, data, "model_config", dict),
        model_state=_field(path, data, "model_state", dict),
        optimizer_state=_field(path, data, "optimizer_state", (dict, type(None))),
        epoch=_field(path, data, "epoch", int),
        samples_seen=_field(path, data, "samples_seen", int),
        config=_field(path, data, "config", dict),
        metrics=_field(path, data, "metrics", dict),
        ct_version=_field(path, data, "ct_version", str),
    )
    if checkpoint.kind not in KIND_NAMES or checkpoint.arch != _ARCH_OF_KIND[checkpoint.kind]:
        raise BadCheckpointError(
            f"{path} has kind {checkpoint.kind!r} with arch {checkpoint.arch!r}, which this ct does not know "
            f"(kinds: {', '.join(f'{k} ({a})' for k, a in _ARCH_OF_KIND.items())}); re-create the checkpoint."
        )
    if expected_kind is not None and checkpoint.kind != expected_kind:
        where = option or "this command"
        raise BadCheckpointError(
            f"{path} is a {KIND_NAMES[checkpoint.kind]} checkpoint (kind {checkpoint.kind!r}), but {where} needs "
            f"a {KIND_NAMES[expected_kind]} checkpoint (kind {expected_kind!r}); pass a {KIND_NAMES[expected_kind]} "
            "checkpoint instead."
        )
    _check_finite(path, checkpoint.model_state)
    return checkpoint


def _check_finite(path: Path, state: Mapping[str, Any]) -> None:
    """Refuse NaN or infinite weights: such a model answers every input with NaN, which a threshold
    then reads as "no finding" (a silently wrong result)."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise BadCheckpointError(
                f"{path} has {bad} non-finite (NaN or infinite) values in {name}: the training that wrote it "
                "diverged; use an earlier checkpoint (e.g. best.ckpt) or retrain with a lower --lr."
            )


def build_model(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> nn.Module:
    """The checkpoint's network with its weights loaded, on ``device``, in eval mode.

    Raises:
        BadCheckpointError: the model_config is invalid, or the weights do not fit the model it describes.
    """
    try:
        model = new_model(checkpoint.arch, checkpoint.model_config)
    except (TypeError, ValueError) as err:
        raise BadCheckpointError(
            f"{checkpoint.path} has an invalid model_config {checkpoint.model_config} ({err}); "
            "re-create the checkpoint."
        ) from err
    load_state_checked(model, checkpoint.model_state, f"{checkpoint.path}")
    return model.to(device).eval()


def load_state_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line BadCheckpointError naming the first misfit."""
    expected = model.state_dict()
    problems: list[str] = []
    for name, tensor in expected.items():
        if name not in state:
            problems.append(f"{name} is missing from the file")
        elif not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            found = tuple(state[name].shape) if isinstance(state[name], torch.Tensor) else type(state[name]).__name__
            problems.append(f"{name} has shape {found} in the file but {tuple(tensor.shape)} in the model")
    problems += [f"the file has {name}, which the model does not" for name in state if name not in expected]
    if problems:
        more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        raise BadCheckpointError(
            f"{source} does not fit the {getattr(model, 'arch', type(model).__name__)} model "
            f"its configuration describes: {problems[0]}{more}; use a checkpoint made for this architecture."
        )
    model.load_state_dict(state)


def _field(path: Path, data: dict, name: str, types: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    # bool is an int subclass; an epoch of True is damage, not a number.
    if name not in data or not isinstance(value, types) or (types is int and isinstance(value, bool)):
        raise BadCheckpointError(
            f"{path} is a damaged ct-pipeline checkpoint: field {name!r} is missing or has the wrong type "
            f"({type(value).__name__}); re-create it."
        )
    return value


def _not_ours_message(path: Path, data: Any) -> str:
    if isinstance(data, dict) and "model_state" in data and "model_name" in data:
        model_name = data.get("model_name")
        kind = _BOOK_KIND_OF_MODEL_NAME.get(str(model_name), "cls")
        return (
            f"{path} is a checkpoint from the book's code (model_name {model_name!r}), not a ct-pipeline "
            f"checkpoint; convert it with `ct models import-book {path} --kind {kind} -o {path.stem}.ckpt` "
            "and use the result."
        )
    return (
        f"{path} is a PyTorch file but not a ct-pipeline checkpoint (no format {FORMAT!r} field); "
        "give a file written by `ct train` or `ct models import-book`."
    )
