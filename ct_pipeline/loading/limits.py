"""What every loader checks about the voxels it is about to read or has read.

- :func:`check_fits_in_memory`: a header's claimed size against the memory this process may
  still use, before any voxel is read (a corrupt or hostile DimSize otherwise ends in a
  ``MemoryError`` or the kernel's OOM killer, far from the file that caused it).
- :func:`check_finite`: NaN or infinite voxels in a float volume. Casting them to int16 gives
  an arbitrary number, and the networks turn a NaN into "no finding": a wrong result with exit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ct_pipeline.errors import BadDataError

GIB = 1 << 30
_CHUNK_VOXELS = 1 << 24  # counting non-finite voxels slab by slab keeps the mask small


def _read_int(path: Path) -> int | None:
    """The integer in a one-value kernel file ("max" and unreadable files give None)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available(proc: Path) -> int | None:
    try:
        lines = (proc / "meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # the kernel reports kB
    return None


def _cgroup_headroom(proc: Path, cgroup_root: Path) -> int | None:
    """The least limit-minus-usage over this process's memory cgroup and every one above it (v2,
    else v1), or None without a limit.

    Every level counts: Slurm puts a job's limit on the job's cgroup, and the step or task
    cgroup the process runs in often says "max".
    """
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    v2_path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
    v1_path = next((line.split(":", 2)[2] for line in lines if ":memory:" in line), "/")
    for mount, relative, limit_name, usage_name in (
        (cgroup_root, v2_path, "memory.max", "memory.current"),
        (cgroup_root / "memory", v1_path, "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        own = mount / relative.lstrip("/")
        headrooms = []
        for level in (own, *(parent for parent in own.parents if parent.is_relative_to(mount))):
            limit = _read_int(level / limit_name)
            # cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
            if limit is not None and limit < 1 << 60:
                headrooms.append(max(limit - (_read_int(level / usage_name) or 0), 0))
        if headrooms:
            return min(headrooms)
    return None


def available_memory_bytes(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit (batch jobs).

    Returns None where neither is readable (not Linux): then nothing is refused.
    """
    found = [n for n in (_meminfo_available(proc), _cgroup_headroom(proc, cgroup_root)) if n is not None]
    return min(found) if found else None


def gib(n_bytes: float) -> str:
    """``n_bytes`` as GiB for a message, e.g. "128 GiB", "0.52 GiB"."""
    return f"{n_bytes / GIB:.3g} GiB"


def check_fits_in_memory(needed_bytes: int, source: str, claim: str) -> None:
    """Refuse to read a volume whose voxels would not fit in the memory available.

    Args:
        needed_bytes: what the loader will allocate at its peak for this volume.
        source: the file or series named in the message.
        claim: what the header says, e.g. "DimSize 4096 4096 4096 of MET_SHORT".

    Raises:
        BadDataError: naming both sizes in GiB.
    """
    available = available_memory_bytes()
    if available is not None and needed_bytes > available:
        raise BadDataError(
            f"{source}: its header claims {claim}, {gib(needed_bytes)} to load, but only {gib(available)} of "
            "memory is available; check the header's size, or load it on a machine with more memory"
        )


def check_finite(hu: np.ndarray, source: str) -> None:
    """Refuse a float volume holding NaN or infinite voxels (integer volumes pass at no cost).

    Raises:
        BadDataError: naming how many voxels are not finite.
    """
    if not np.issubdtype(hu.dtype, np.floating) or hu.size == 0:
        return
    # A sum of finite HU cannot overflow float64, so one pass without a mask settles the common case.
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: the answer, not a warning
        if np.isfinite(np.sum(hu, dtype=np.float64)):
            return
    flat = hu.reshape(-1)
    n_bad = sum(
        int(np.count_nonzero(~np.isfinite(flat[start : start + _CHUNK_VOXELS])))
        for start in range(0, flat.size, _CHUNK_VOXELS)
    )
    if n_bad:  # else huge but finite values overflowed the sum
        raise non_finite_error(source, n_bad, hu.size)


def non_finite_error(source: str, n_bad: int, n_voxels: int) -> BadDataError:
    """The one message for NaN or infinite voxels, whichever loader found them."""
    return BadDataError(
        f"{source}: {n_bad} of {n_voxels} voxels are not finite (NaN or infinite); a CT holds a number of HU "
        "in every voxel: fix or re-export the image"
    )
