"""What both datasets share: cached regions filled on first use, crops into float buffers, epoch RNG."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from ct_pipeline.cache import CachedRegion, CropCache, RegionSpec
from ct_pipeline.catalog import Catalog
from ct_pipeline.crops import crop_start_irc
from ct_pipeline.errors import BadDataError, BadInputError, CtError
from ct_pipeline.prepcache import fill_series, key_for

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "all")


class SeriesRegions:
    """The cached regions of some series under one :class:`RegionSpec`, filled on first use.

    Keys are computed once here (they stat the source files); regions are opened lazily, once
    per process. Pickles without its open memory maps, so it travels to DataLoader workers.
    """

    def __init__(self, catalog: Catalog, cache: CropCache, series_uids: Sequence[str], spec: RegionSpec):
        self.cache = cache
        self.spec = spec
        self._entries = {uid: catalog.entries[uid] for uid in series_uids}
        # what catalog.candidates_of(uid) gives (same rows, same order), in one pass over the table
        wanted = catalog.candidates[catalog.candidates["series_uid"].isin(set(series_uids))]
        self._candidates = {uid: frame for uid, frame in wanted.groupby("series_uid", sort=False)}
        self._keys = {uid: key_for(self._entries[uid], self._candidates[uid], spec) for uid in series_uids}
        self._open: dict[str, CachedRegion] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}, "_arrays": {}}

    def __contains__(self, series_uid: str) -> bool:
        return series_uid in self._keys

    def key(self, series_uid: str) -> str:
        return self._keys[series_uid]

    def fill_missing(self) -> dict[str, str]:
        """Fill the cache for every series not in it yet (reads those CTs).

        Returns:
            The series that could not be read, with the reason (empty when all are cached).
        """
        unreadable: dict[str, str] = {}
        for series_uid, key in self._keys.items():
            if self.cache.contains(key):
                continue
            try:
                fill_series(self.cache, self._entries[series_uid], self._candidates[series_uid], self.spec)
            except CtError as err:
                unreadable[series_uid] = str(err)
        return unreadable

    def region(self, series_uid: str) -> CachedRegion:
        """The series' region, reading the CT and filling the cache if it is missing or corrupt."""
        region = self._open.get(series_uid)
        if region is not None:
            return region
        key = self._keys[series_uid]
        region = self.cache.get(key)
        if region is None:
            log.info("series %s is not in the crop cache (spec %s); filling it now", series_uid, self.spec.key())
            fill_series(self.cache, self._entries[series_uid], self._candidates[series_uid], self.spec)
            region = self.cache.get(key)
            if region is None:
                raise BadDataError(
                    f"the crop cache in {self.cache.directory} did not keep series {series_uid} after filling it; "
                    "check free disk space and the cache's --size-limit-gb"
                )
        self._open[series_uid] = region
        return region

    def array(self, series_uid: str) -> np.ndarray:
        """The region's voxels as a plain ndarray view of the memory map (slicing a np.memmap runs
        Python code on every slice; a plain view slices in C)."""
        array = self._arrays.get(series_uid)
        if array is None:
            array = self._arrays[series_uid] = self.region(series_uid).hu.view(np.ndarray)
        return array


def clip_bounds(hu_range: tuple[float, float], dtype: np.dtype) -> tuple[float, float]:
    """``hu_range`` as np.clip bounds for data of ``dtype``.

    For integer data the bounds are integers inside the type's range: clipping int16 HU to
    (-1000, 1000) then runs in int16 (float bounds would make numpy clip in float64, 3x slower)
    and is the same as clipping to the float range, since the data are integers.
    """
    low, high = hu_range
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return max(math.ceil(low), info.min), min(math.floor(high), info.max)
    return low, high


def crop_into(
    region: CachedRegion, center_irc: np.ndarray, out: np.ndarray, hu_range: tuple[float, float] | None = None
) -> None:
    """Write the crop of ``out.shape`` centred on ``center_irc`` into ``out`` (any dtype), padding with air.

    Same voxels as :meth:`CachedRegion.crop`, but clipping to ``hu_range`` and the conversion to
    ``out.dtype`` happen in the one strided pass over the memory map (no temporary).
    """
    size = np.asarray(out.shape, dtype=np.int64)
    start = crop_start_irc(center_irc, out.shape) - np.asarray(region.origin_irc, dtype=np.int64)
    stop = start + size
    if (start >= 0).all() and (stop <= np.asarray(region.hu.shape)).all():
        source = region.hu[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    else:
        source = region.crop(center_irc, tuple(size))
    if hu_range is None:
        np.copyto(out, source, casting="unsafe")
    else:
        np.clip(source, *clip_bounds(hu_range, source.dtype), out=out, casting="unsafe")


def select_series(catalog: Catalog, split: str, val_stride: int) -> list[str]:
    if split not in SPLITS:
        raise BadInputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return catalog.select(split, val_stride)


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The generator of one epoch (and item): a pure function of its arguments, no global state."""
    return np.random.default_rng([int(seed), int(epoch), *(int(m) for m in more)])


def shared_epoch_cell() -> torch.Tensor:
    """One int64 in shared memory: DataLoader workers (persistent ones too) read the epoch from it."""
    return torch.zeros(1, dtype=torch.int64).share_memory_()


def follow_epoch(dataset) -> None:
    """Redraw ``dataset``'s epoch list when ``set_epoch`` was called in another process since."""
    epoch = int(dataset._epoch_cell[0])
    if epoch != dataset.epoch:
        dataset._draw(epoch)


def cycled_permutations(rng: np.random.Generator, n_items: int, length: int) -> np.ndarray:
    """``length`` draws from ``range(n_items)``: fresh shuffles one after another, so every item
    appears ``length // n_items`` or one more times."""
    if n_items == 0 or length == 0:
        return np.zeros(0, dtype=np.int64)
    rounds = -(-length // n_items)
    return np.concatenate([rng.permutation(n_items) for _ in range(rounds)])[:length]


def rank_share(items: np.ndarray, rank: int, world_size: int, equal: bool) -> np.ndarray:
    """Rank's contiguous block of ``items``; ``equal`` drops the remainder so all ranks get as many.

    Contiguous blocks (not every world_size-th item) keep each block's class balance, which is
    interleaved item by item.
    """
    if equal:
        per_rank = len(items) // world_size
        return items[rank * per_rank : (rank + 1) * per_rank]
    return np.array_split(items, world_size)[rank]


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise BadInputError(f"rank {rank} of world size {world_size}: need world_size >= 1 and 0 <= rank < world_size")


def hu_range_ok(hu_range: tuple[float, float]) -> None:
    if len(hu_range) != 2 or not hu_range[0] < hu_range[1]:
        raise BadInputError(f"hu_range {hu_range}: expected (low, high) with low < high, e.g. (-1000, 1000)")
