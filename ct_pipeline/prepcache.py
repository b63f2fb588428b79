"""Filling the crop cache: one pass over each CT, resumable, parallel, shardable."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ct_pipeline.cache import (
    CachedRegion,
    CropCache,
    RegionSpec,
    centers_fingerprint,
    region_box,
    region_key,
    stat_fingerprint,
)
from ct_pipeline.catalog import Catalog
from ct_pipeline.errors import CtError, OutputError
from ct_pipeline.loading import entry_files
from ct_pipeline.loading.series_index import SeriesEntry
from ct_pipeline.logfile import NO_LOG_FILE, LogFile
from ct_pipeline.luna16 import CENTER_COLUMNS
from ct_pipeline.preemption import StopRequests, Terminated, ignore_stop_signals
from ct_pipeline.sharding import Shard
from ct_pipeline.threads import capped_workers

log = logging.getLogger(__name__)


def key_for(entry: SeriesEntry, candidates: pd.DataFrame, spec: RegionSpec) -> str:
    """The cache key of a series' region: changes when its files, candidates or the spec change.

    The files are every one the loader reads (:func:`~ct_pipeline.loading.entry_files`), keyed by
    name, size and mtime, not content: hashing all of LUNA16 (~120 GB) at every training start
    would cost minutes (BENCHMARKS.md), and a file rewritten in place with its size and mtime
    restored is not what a downloaded data set goes through. Diagnosis results, whose reuse a
    user does not see, key on content.
    """
    centers = candidates[CENTER_COLUMNS].to_numpy(dtype=np.float64)
    return region_key(
        entry.series_uid,
        stat_fingerprint(entry_files(entry)),
        spec,
        centers_fingerprint(centers, candidates["is_nodule"].to_numpy()),
    )


@dataclass(frozen=True)
class FillResult:
    series_uid: str
    filled: bool  # False: already cached (or failed)
    n_candidates: int
    n_outside: int  # candidates whose centre is outside the volume (skipped)
    region_bytes: int
    error: str = ""  # why the series could not be cached ("" when it was)

    @property
    def failed(self) -> bool:
        return bool(self.error)


def fill_or_report(cache: CropCache, entry: SeriesEntry, candidates: pd.DataFrame, spec: RegionSpec) -> FillResult:
    """:func:`fill_series`, with a series that cannot be read (damaged, truncated) reported in
    the result instead of raised, so a batch goes on with the others."""
    try:
        return fill_series(cache, entry, candidates, spec)
    except OutputError:
        raise  # the cache cannot be written: the same for every series, so the batch stops
    except CtError as err:
        return FillResult(entry.series_uid, False, len(candidates), 0, 0, error=str(err))
    except (OSError, ValueError, MemoryError) as err:
        return FillResult(entry.series_uid, False, len(candidates), 0, 0, error=f"{type(err).__name__}: {err}")


def fill_series(cache: CropCache, entry: SeriesEntry, candidates: pd.DataFrame, spec: RegionSpec) -> FillResult:
    """Read one CT and store the region covering all its candidates' crops (no-op when cached)."""
    key = key_for(entry, candidates, spec)
    if cache.contains(key):
        return FillResult(entry.series_uid, False, len(candidates), 0, 0)
    with cache.filling(key):  # another process filling the same series: wait, then use its entry
        if cache.contains(key):
            return FillResult(entry.series_uid, False, len(candidates), 0, 0)
        return _fill(cache, key, entry, candidates, spec)


def _fill(cache: CropCache, key: str, entry: SeriesEntry, candidates: pd.DataFrame, spec: RegionSpec) -> FillResult:
    from ct_pipeline.loading import load_entry

    volume = load_entry(entry)
    centers_irc = volume.geometry.xyz_to_irc_rounded(candidates[CENTER_COLUMNS].to_numpy(dtype=np.float64))
    inside = ((centers_irc >= 0) & (centers_irc < np.asarray(volume.shape_irc))).all(axis=1)
    n_outside = int((~inside).sum())
    if n_outside:
        log.warning(
            "series %s: %d of %d candidates lie outside the volume and are skipped",
            entry.series_uid,
            n_outside,
            len(candidates),
        )
    start, stop = region_box(
        volume.shape_irc,
        centers_irc[inside],
        candidates["is_nodule"].to_numpy()[inside],
        spec,
        volume.geometry.spacing_xyz[::-1],
    )
    hu = volume.hu[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    cache.put(key, CachedRegion(hu, tuple(int(v) for v in start), volume.shape_irc, volume.geometry, entry.series_uid))
    return FillResult(entry.series_uid, True, len(candidates), n_outside, int(hu.nbytes))


@dataclass(frozen=True)
class PrepcacheConfig:
    """What `ct prepcache` fills.

    Attributes:
        split: "all", "train" or "val" (by series, see :func:`ct_pipeline.luna16.split_series`).
        series: explicit series UIDs (overrides split).
        shard: this task's shard of the selected series.
        workers: processes reading CTs in parallel.
        val_stride: the split rule's stride.
        spec: which voxels are kept.
    """

    split: str = "all"
    series: tuple[str, ...] = ()
    shard: Shard = Shard()
    workers: int = 1
    val_stride: int = 10
    spec: RegionSpec = RegionSpec()

    def __post_init__(self):
        if self.workers < 1:
            from ct_pipeline.errors import BadInputError

            raise BadInputError(f"PrepcacheConfig.workers {self.workers}: need at least 1")


def _fill_one(args) -> FillResult:
    cache_dir, size_limit_gb, entry, candidates, spec = args
    cache = CropCache(cache_dir, size_limit_gb)
    try:
        return fill_or_report(cache, entry, candidates, spec)
    finally:
        cache.close()


def prepcache(
    catalog: Catalog,
    cache: CropCache,
    config: PrepcacheConfig,
    progress: Callable[[FillResult], None] | None = None,
    log_file: LogFile = NO_LOG_FILE,
    stop: StopRequests | None = None,
) -> list[FillResult]:
    """Fill the cache for the selected series. Safe to kill and re-run: done series are skipped.

    Args:
        progress: called with each series' result as it finishes.
        log_file: gets one line per series (an array task's own log, :mod:`ct_pipeline.logfile`).
        stop: checked between series; the series being filled are finished first.

    Returns:
        One result per series of this shard, in the order they finished; a series that could not
        be read is a result with ``error`` set (the others are still filled).

    Raises:
        Terminated: ``stop`` was requested.
    """
    selected = config.shard.select(catalog.select(config.split, config.val_stride, config.series))
    jobs = [
        (cache.directory.parent, cache.size_limit_gb, catalog.entries[uid], catalog.candidates_of(uid), config.spec)
        for uid in selected
    ]
    log_file.line(f"{len(jobs)} series in shard {config.shard} ({config.split}), cache {cache.directory}")
    results: list[FillResult] = []

    def finished(result: FillResult) -> None:
        results.append(result)
        level = logging.ERROR if result.failed else logging.WARNING if result.n_outside else logging.INFO
        log_file.line(fill_line(result), level)
        if progress:
            progress(result)

    check = stop.check if stop is not None else (lambda: None)
    if config.workers == 1 or len(jobs) <= 1:
        for job in jobs:
            check()
            finished(fill_or_report(cache, *job[2:]))
    else:
        _fill_in_processes(
            jobs, min(capped_workers(config.workers, "PrepcacheConfig.workers"), len(jobs)), finished, check
        )
    filled = sum(r.filled for r in results)
    failed = sum(r.failed for r in results)
    failures = f", {failed} failed" if failed else ""
    log_file.line(
        f"finished: {filled} filled, {len(results) - filled - failed} already cached{failures} of {len(jobs)} series"
    )
    return results


def _fill_in_processes(
    jobs: list, workers: int, finished: Callable[[FillResult], None], check: Callable[[], None]
) -> None:
    """Run ``jobs`` on ``workers`` processes, at most one series each at a time.

    Series are handed out one by one, so that a stop request (``check`` raises) waits only for the
    series in progress: they finish and are stored, nothing is left half-written.
    """
    # spawn, not fork: the parent may hold SQLite handles and torch threads that must not be forked.
    context = multiprocessing.get_context("spawn")
    pending = iter(jobs)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=ignore_stop_signals) as pool:
        # range first: zip stops on it before taking a job from `pending` that it would then drop
        running = {pool.submit(_fill_one, job) for _, job in zip(range(workers), pending)}
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(future.result())
                check()
                running |= {pool.submit(_fill_one, job) for _, job in zip(range(len(done)), pending)}
        except Terminated:
            for future in running:  # already reading: let them finish and store their series
                finished(future.result())
            raise


def fill_line(result: FillResult) -> str:
    """One line for a log, e.g. ``filled UID: 12 candidates, 3.2 MiB``, ``cached UID: 12 candidates``
    or ``failed UID: <why>``."""
    if result.failed:
        return f"failed {result.series_uid}: {result.error}"
    if not result.filled:
        return f"cached {result.series_uid}: {result.n_candidates} candidates"
    outside = f", {result.n_outside} outside the volume (skipped)" if result.n_outside else ""
    size_mib = result.region_bytes / 2**20
    return f"filled {result.series_uid}: {result.n_candidates} candidates{outside}, {size_mib:.1f} MiB"


def selected_series(catalog: Catalog, config: PrepcacheConfig) -> Sequence[str]:
    return config.shard.select(catalog.select(config.split, config.val_stride, config.series))
