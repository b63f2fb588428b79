"""Atomic file writes: a temporary file in the same folder, fsync, then rename; and checking
that an output location is writable before the work that fills it starts.

A kill at any moment leaves either the old file or the new one, never half of one. A write that
fails (a full disk, no permission, a read-only file system) is the user's environment, not a
bug: it raises :class:`~ct_pipeline.errors.OutputError` naming the path and the reason.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ct_pipeline.errors import OutputError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",  # mkdir of a folder that is a file
    errno.EISDIR: "it is a folder",
}


# Free bytes below which a write failure without an errno is taken for a full disk: the failed
# write has just used up what was left (a 1 MiB model needs more than this anyway).
_FULL_BELOW_BYTES = 1 << 20


def write_failure(path: os.PathLike | str, err: Exception, option: str = "") -> OutputError:
    """The one-line error for a failed write of ``path`` (``option``: the option that named it).

    ``err`` is an OSError (its errno says why) or another library's write error. Those carry no
    errno (torch's zip writer on a full disk: ``[enforce fail at inline_container.cc:672]
    unexpected pos ...``), so the free space of the path's file system, read after the failure,
    says whether the disk was full; otherwise the library's text is the reason.
    """
    if isinstance(err, OSError):
        reason = _REASONS.get(err.errno or 0, err.strerror or str(err))
    elif _free_bytes(Path(path).parent) < _FULL_BELOW_BYTES:
        reason = _REASONS[errno.ENOSPC]
    else:
        reason = " ".join(str(err).split())  # one line, whatever the library wrote
    named = f"{option} {path}" if option else str(path)
    return OutputError(
        f"{named}: cannot write there ({reason}); free space, fix the permissions or choose another path"
    )


def _free_bytes(folder: Path) -> float:
    """Bytes an unprivileged user may still write on ``folder``'s file system (inf when unknown)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # a folder that went away; no statvfs on Windows
        return float("inf")
    return stats.f_bavail * stats.f_frsize


def check_writable(path: os.PathLike | str, option: str, is_folder: bool = False) -> None:
    """Fail now, before hours of work, if ``path`` (a file, or with ``is_folder`` a folder) cannot be written.

    Creates the folder (and parents) if needed, and a probe file in it that is removed again.

    Raises:
        OutputError: naming ``option``, the path and the reason.
    """
    folder = Path(path) if is_folder else Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ct-write-probe.{secrets.token_hex(6)}"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        probe.unlink()
    except OSError as err:
        raise write_failure(path, err, option) from err
    if not is_folder and Path(path).is_dir():
        raise write_failure(path, OSError(errno.EISDIR, "is a directory"), option)


@contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Raises:
        OutputError: the folder, the temporary file or the rename could not be written.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 lets the umask decide the mode, as for any other file the user writes
        # (mkstemp would make every checkpoint and report owner-only).
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        raise write_failure(target, err) from err
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise write_failure(target, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: os.PathLike | str, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
