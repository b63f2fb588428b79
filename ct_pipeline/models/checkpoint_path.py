"""The checkpoint file a user named: a folder is the usual slip (a run's folder for its best.ckpt)."""

from __future__ import annotations

import os
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
