"""Convert the book's published ``.state`` checkpoints into the project's format.

The book saves ``{"model_state", "model_name", "optimizer_state", "optimizer_name", "epoch",
"totalTrainingSamples_count", ...}``; its parameter names are kept by our networks, so the
weights load unchanged. The optimizer state is dropped (our training builds its own optimizer);
its name is kept with the rest of the provenance in the new checkpoint's ``config``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ct_pipeline.errors import BadCheckpointError, BadInputError
from ct_pipeline.loading.fingerprint import sha256_of_file
from ct_pipeline.models.checkpoints import (
    FORMAT,
    KIND_NAMES,
    Checkpoint,
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
)
from ct_pipeline.models.classifier import LunaClassifier
from ct_pipeline.models.safe_load import load_torch_file
from ct_pipeline.models.unet import SegmentationUNet

# The book's class name for each kind of model it publishes.
_BOOK_MODEL_NAME = {"seg": "UNetWrapper", "cls": "LunaModel", "mal": "LunaModel"}


def import_book_checkpoint(
    source: os.PathLike | str, kind: str, destination: os.PathLike | str, *, overwrite: bool = False
) -> Checkpoint:
    """Convert a book checkpoint (``*.state``) into a project checkpoint at ``destination``.

    Args:
        source: the book's file, e.g. ``seg_2020-01-26_...best.state``.
        kind: "seg" for the book's UNetWrapper, "cls" or "mal" for its LunaModel.
        destination: the project checkpoint to write (atomically).
        overwrite: replace an existing ``destination``.

    Returns:
        The written checkpoint, read back and validated.

    Raises:
        BadInputError: unknown kind, or ``destination`` exists and ``overwrite`` is False.
        BadCheckpointError: ``source`` is unreadable, unsafe, not a book checkpoint, of another
            kind, or its weights do not fit the book's architecture.
    """
    source, destination = Path(source), Path(destination)
    if kind not in KIND_NAMES:
        raise BadInputError(f"--kind {kind!r} is not a model kind; use one of {', '.join(KIND_NAMES)}.")
    if destination.exists() and not overwrite:
        raise BadInputError(f"{destination} already exists; choose another output path or pass --force.")
    data = load_torch_file(source, hint="give one of the book's *.state files")
    if not isinstance(data, dict) or "model_state" not in data or "model_name" not in data:
        already = isinstance(data, dict) and data.get("format") == FORMAT
        raise BadCheckpointError(
            f"{source} is already a ct-pipeline checkpoint; use it directly."
            if already
            else f"{source} is not a checkpoint from the book's code (no model_state/model_name); "
            "give one of the book's *.state files."
        )
    model_name = data["model_name"]
    if model_name not in _BOOK_MODEL_NAME.values():
        raise BadCheckpointError(
            f"{source} holds the book's {model_name!r}, which ct cannot import; "
            "give the book's UNetWrapper (--kind seg) or LunaModel (--kind cls or mal) checkpoint."
        )
    if model_name != _BOOK_MODEL_NAME[kind]:
        raise BadCheckpointError(
            f"{source} holds the book's {model_name!r}, but --kind {kind} needs its {_BOOK_MODEL_NAME[kind]!r}; "
            f"pass --kind {'seg' if model_name == 'UNetWrapper' else 'cls'} for this file."
        )
    # The book's published models use our default configurations.
    model = SegmentationUNet() if kind == "seg" else LunaClassifier()
    load_state_checked(model, data["model_state"], f"{source}")
    provenance = {
        "source": {
            "file": source.name,
            "sha256": sha256_of_file(source),
            "model_name": model_name,
            "optimizer_name": data.get("optimizer_name"),
            "epoch": data.get("epoch"),
            "total_training_samples": data.get("totalTrainingSamples_count"),
            "sys_argv": data.get("sys_argv"),
            "time": data.get("time"),
        },
        "imported_by": "ct models import-book",
    }
    save_checkpoint(
        destination,
        model,
        kind=kind,
        epoch=_int_or_zero(data.get("epoch")),
        samples_seen=_int_or_zero(data.get("totalTrainingSamples_count")),
        config=provenance,
    )
    return load_checkpoint(destination, expected_kind=kind)


def _int_or_zero(value: object) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
