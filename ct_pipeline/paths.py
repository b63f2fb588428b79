"""Where data and the cache live, and series-UID validation before any path is built."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ct_pipeline.errors import BadInputError

# The crop cache's size cap (GB) unless told otherwise; here, not in cache.py, so that the CLI's help
# reads it without loading numpy and diskcache.
DEFAULT_SIZE_LIMIT_GB = 500.0

DATA_ROOT_ENV = "CT_DATA_ROOT"
CACHE_DIR_ENV = "CT_CACHE_DIR"

# DICOM UID grammar (PS3.5 9.1): components of digits separated by dots, no leading zero in a
# multi-digit component, at most 64 characters in all.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LEN = 64


def is_series_uid(text: str) -> bool:
    """True when ``text`` is a syntactically valid DICOM UID."""
    return len(text) <= UID_MAX_LEN and bool(_UID_RE.match(text))


def validate_series_uid(text: str) -> str:
    """Return ``text`` unchanged if it is a valid DICOM UID, else raise :class:`BadInputError`.

    This runs before a UID is ever joined to a path, so ``../`` and friends never reach the disk.
    """
    if len(text) > UID_MAX_LEN:
        raise BadInputError(
            f"series UID {text[:20]!r}... is {len(text)} characters long; a DICOM UID has at most "
            f"{UID_MAX_LEN} (digits and dots only)"
        )
    if not _UID_RE.match(text):
        raise BadInputError(
            f"{text!r} is not a valid series UID (digits separated by dots, e.g. 1.2.840.113654.1); "
            "give a UID from `ct series list`, a DICOM folder, or an image file"
        )
    return text


def read_series_list(path: os.PathLike | str, option: str = "--series-file") -> list[str]:
    """Series listed in ``path``, one per line; blank lines and ``#`` comments ignored.

    Raises:
        BadInputError: the file is unreadable (named with ``option``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{option} {path}: cannot read it ({err}); give a text file, one series per line") from err
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def resolve_data_roots(explicit: Sequence[os.PathLike | str] | None = None) -> list[Path]:
    """The data roots to search: ``explicit`` if given, else ``$CT_DATA_ROOT`` (os.pathsep-separated)."""
    if explicit:
        roots = [Path(p) for p in explicit]
    else:
        env = os.environ.get(DATA_ROOT_ENV, "")
        roots = [Path(p) for p in env.split(os.pathsep) if p]
    for root in roots:
        if not root.is_dir():
            raise BadInputError(f"data root {str(root)!r} is not a folder; pass --data-root DIR or set {DATA_ROOT_ENV}")
    return [r.resolve() for r in roots]


def default_cache_dir() -> Path:
    """``data_cache/`` of the source checkout when running from one, else ``./data_cache``."""
    checkout_cache = Path(__file__).resolve().parent.parent / "data_cache"
    if (checkout_cache / "README.md").is_file():
        return checkout_cache
    return Path.cwd() / "data_cache"


def resolve_cache_dir(explicit: os.PathLike | str | None = None) -> Path:
    """The cache folder: ``explicit``, else ``$CT_CACHE_DIR``, else :func:`default_cache_dir`."""
    if explicit:
        path = Path(explicit)
    elif os.environ.get(CACHE_DIR_ENV):
        path = Path(os.environ[CACHE_DIR_ENV])
    else:
        path = default_cache_dir()
    if path.exists() and not path.is_dir():
        raise BadInputError(f"cache dir {str(path)!r} exists and is not a folder; pick another with --cache-dir")
    return path


# File systems on which SQLite's locking (and so diskcache) is unreliable or slow.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "afs",
        "9p",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "panfs",
        "wekafs",
    }
)


def filesystem_type(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """The type of the file system holding ``path`` (Linux /proc/mounts), or None if unknown."""
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return None
    probe = Path(path).resolve()  # symlinks of the existing part resolved; the rest taken as written
    best, best_type = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        if (probe == Path(mount_point) or Path(mount_point) in probe.parents) and len(mount_point) > best:
            best, best_type = len(mount_point), fields[2]
    return best_type


def network_filesystem_warning(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """A warning when ``path`` is on a network file system, where the cache's SQLite is unsafe."""
    fs_type = filesystem_type(path, mounts_file)
    if fs_type in NETWORK_FILESYSTEMS:
        return (
            f"cache dir {path} is on a {fs_type} file system: diskcache's SQLite is not safe there; "
            f"use node-local disk, e.g. {CACHE_DIR_ENV}=$TMPDIR/ct-cache"
        )
    return None
