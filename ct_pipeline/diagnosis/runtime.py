"""Running the pipeline's work: memory the allocator gives back, parallel batches.

The U-Net's activations change size from batch to batch (the lung boxes do). glibc keeps
freed blocks of up to 32 MiB in its heaps and reuses them only for requests that fit, so with
two workers the heaps grew by ~300 MB on the real test CT. :func:`returning_freed_memory`
serves blocks of 1 MiB or more from their own mappings while the U-Net runs, so the resident
memory stays at what is live (~150 MB of activations), at the price of page faults; torch's
``THP_MEM_ALLOC_ENABLE`` (:func:`configure_process_memory`) makes those faults 2 MiB at a time,
which halved their cost. Nothing here runs at import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MAPPED_BLOCK_BYTES = 1 << 20
# glibc's own ceilings for its adaptive thresholds (64-bit): what it converges to anyway.
_HEAP_MMAP_THRESHOLD = 32 << 20
_HEAP_TRIM_THRESHOLD = 64 << 20
T = TypeVar("T")
R = TypeVar("R")


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


@contextmanager
def returning_freed_memory(enabled: bool = True, block_bytes: int = MAPPED_BLOCK_BYTES) -> Iterator[None]:
    """Within the block, glibc maps blocks of ``block_bytes`` or more individually (freed = returned).

    Afterwards blocks below 32 MiB come from the heaps again (where fixed-size batches, like the
    classifier's, reuse them for free). A no-op off glibc or when ``enabled`` is False.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, block_bytes)
    libc.mallopt(_M_TRIM_THRESHOLD, block_bytes)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_TRIM_THRESHOLD)


def release_free_heap(enabled: bool = True) -> None:
    """Hand the heaps' free pages back to the system (``malloc_trim``; glibc only).

    Called between stages: what one stage freed would otherwise stay resident while the
    next one allocates differently sized blocks.
    """
    libc = _glibc() if enabled else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def configure_process_memory() -> None:
    """Process-wide allocator settings for a diagnosis run; call once, before loading anything.

    * torch backs large CPU tensors with transparent huge pages (``THP_MEM_ALLOC_ENABLE``,
      read at torch's first large allocation): page faults 2 MiB at a time.
    * glibc serves every thread from one arena (``M_ARENA_MAX`` = 1): with one arena per
      worker thread, each kept its own freed blocks and the classifier stage peaked ~70 MB higher.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(function, items)`` on ``workers`` threads, results in order, at most ``workers + 1`` in flight.

    Torch and numpy release the GIL in their kernels, so threads run batches side by side;
    the bound keeps memory to a few batches whatever the number of items.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ct-diagnose") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
