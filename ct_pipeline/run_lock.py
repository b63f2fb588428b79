"""One run per output folder: an advisory lock on a file in it, held for the whole run.

``fcntl.flock`` is tied to the open file, so the kernel drops it when the holder ends in any way
(kill -9 included): a lock file left behind by a dead run never blocks the next one. The file
holds the holder's pid, for the message a second run gets. It is never deleted: removing it on
release would let a third run lock a fresh file while a second still holds the old one.
Nested runs lock their own folders (``ct demo --out D`` runs ``ct train-seg --out D/runs/seg``),
so they never wait for themselves.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ct_pipeline.errors import OutputError

log = logging.getLogger(__name__)

LOCK_NAME = ".ct-run.lock"


def lock_name(part: str = "") -> str:
    """The lock file's name; ``part`` (e.g. ``shard-0-of-8``) gives runs that may share a folder one each."""
    return f".ct-run.{part}.lock" if part else LOCK_NAME


@contextmanager
def output_lock(folder: os.PathLike | str, option: str, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``folder``'s run lock (creating the folder) until the block ends; yields the lock file.

    Raises:
        OutputError: another live process holds it (its pid named), or the lock file cannot be written.
            A file system without locks only gets a warning: the block runs unguarded.
    """
    from ct_pipeline.atomic import write_failure

    path = Path(folder) / name
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise write_failure(folder, err, option) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError as err:
            raise OutputError(
                f"{option} {folder} is in use by another run ({_holder(fd)}); wait for it to end or choose another {option}"
            ) from err
        except OSError as err:
            # A file system without flock (Lustre mounted without it, some NFS set-ups): refusing
            # every run there would be worse than running unguarded, so say so and go on.
            log.warning(
                "%s %s: cannot lock it (%s); running without the one-run-per-folder guard",
                option,
                folder,
                err.strerror or err,
            )
            locked = False
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """'pid N' as the holder wrote it (it may not have yet, just after taking the lock)."""
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet written"
