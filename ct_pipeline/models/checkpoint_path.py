"""The checkpoint file a user named: a folder is the usual slip (a run's folder for its best.ckpt); an
exported model (``ct models export``) is told apart from a checkpoint before anything loads it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from ct_pipeline.errors import NotFoundError

# What `ct train-*` writes into a run's folder, in the order worth suggesting.
RUN_CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")


def checkpoint_file(path: os.PathLike | str, option: str) -> Path:
    """``path`` if it is a file; else a one-line error that says what it is instead.

    Args:
        path: what the user gave.
        option: the option that took it (e.g. "--cls-model"), quoted in the message.

    Raises:
        NotFoundError: ``path`` is a folder (naming the run checkpoints it holds, if any) or does not exist.
    """
    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in RUN_CHECKPOINT_NAMES if (path / name).is_file()]
        advice = (
            f"it holds {' and '.join(p.name for p in inside)}: pass {inside[0]}"
            if inside
            else "give a checkpoint file (a run's best.ckpt or last.ckpt)"
        )
        raise NotFoundError(f"{option} {path} is a folder, not a file; {advice}")
    if not path.is_file():
        raise NotFoundError(f"{option} {path}: no such file; give a checkpoint path")
    return path


def exported_format(path: os.PathLike | str) -> str | None:
    """ "onnx" for a ``.onnx`` file, "torchscript" for a TorchScript archive, None for anything else
    (a checkpoint, which :func:`~ct_pipeline.models.load_checkpoint` then reads or explains)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                # torch.save archives hold data.pkl and data/; only TorchScript ones hold code/.
                if any("/code/" in name for name in archive.namelist()):
                    return "torchscript"
        except (zipfile.BadZipFile, OSError):
            return None
    return None
