"""The on-disk crop cache: one int16 region per series, memory-mapped at read time.

Why regions and not one entry per candidate (the book's choice): LUNA16 has ~620 candidates
per scan whose 32x48x48 crops overlap heavily. Storing the bounding box of all of a series'
crops once, as int16, costs less disk than even int16 per-candidate crops, fills in one pass
over the CT, and a crop is then a slice of a memory-mapped array (no SQLite look-up and no
unpickling on the warm path). BENCHMARKS.md has the figures against the book's cache.

Layout: a diskcache ``Cache`` (one SQLite, so writers wait for each other instead of
FanoutCache's silent 10 ms give-up) holds, per series,
- ``data|<key>``: the region as a .npy file (diskcache keeps large values as files), and
- ``meta|<key>``: JSON with the region's place in the volume, the geometry and a CRC-32.
The data is written before the metadata, so a half-written entry is never seen as complete;
the data file itself is written under a ``.partial`` name and renamed when whole
(:class:`_AtomicDisk`), so a killed or out-of-space fill leaves at most a ``.partial`` file, which
``ct cache info`` counts and ``ct cache clear`` removes. A series is filled under a per-key lock
(:meth:`CropCache.filling`), so two processes never read the same CT for the same entry.
Keys are strings: the series UID, a fingerprint of the source files (size and mtime), the
region spec, a hash of the candidate centres and CACHE_FORMAT_VERSION.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import diskcache
import numpy as np

from ct_pipeline.atomic import write_failure
from ct_pipeline.crops import crop_start_irc, cut_crop, native_extent_irc
from ct_pipeline.geometry import Geometry
from ct_pipeline.paths import DEFAULT_SIZE_LIMIT_GB, network_filesystem_warning
from ct_pipeline.volume import HU_AIR

log = logging.getLogger(__name__)

# Bump when what is stored changes (layout, dtype, clipping, region rule): old entries are then
# never read again and age out through eviction.
CACHE_FORMAT_VERSION = 1
CACHE_SUBDIR = "crops"


@dataclass(frozen=True)
class RegionSpec:
    """Which voxels of a series the cache keeps.

    Attributes:
        crop_irc: classification crop size (index, row, col) in voxels; the book's 32x48x48.
        crop_spacing_mm: the crop's voxel spacing (index, row, col) in mm, or None (native).
            The region stays native (crops are resampled on read, :func:`resampled_crop`); it is
            made large enough for a crop of that many millimetres, which is a different number
            of voxels in each series.
        nodule_margin_irc: extra voxels kept around annotated nodules on each side, so the
            segmentation dataset can cut its 96x96 training regions from the same entry.
    """

    crop_irc: tuple[int, int, int] = (32, 48, 48)
    nodule_margin_irc: tuple[int, int, int] = (0, 24, 24)
    crop_spacing_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.crop_spacing_mm is not None:
            object.__setattr__(self, "crop_spacing_mm", tuple(float(v) for v in self.crop_spacing_mm))

    def key(self) -> str:
        key = "crop{}x{}x{}-nm{}x{}x{}".format(*self.crop_irc, *self.nodule_margin_irc)
        # Native keys stay as they were, so existing caches keep serving native runs.
        return key if self.crop_spacing_mm is None else key + "-mm{:g}x{:g}x{:g}".format(*self.crop_spacing_mm)


def stat_fingerprint(paths: list[str]) -> str:
    """A short hash of the names, sizes and mtimes of a series' files.

    It changes when a file is added, removed or rewritten the usual way, not when bytes change
    under a restored size and mtime; :func:`ct_pipeline.prepcache.key_for` says why the cache
    accepts that, and :mod:`ct_pipeline.loading.fingerprint` hashes content where it matters.
    """
    digest = hashlib.sha1()
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def centers_fingerprint(centers_xyz: np.ndarray, is_nodule: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(np.round(centers_xyz, 3), dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(is_nodule, dtype=np.bool_).tobytes())
    return digest.hexdigest()[:16]


def region_key(series_uid: str, source: str, spec: RegionSpec, centers: str) -> str:
    return f"v{CACHE_FORMAT_VERSION}|{series_uid}|{source}|{spec.key()}|{centers}"


@dataclass(frozen=True)
class CachedRegion:
    """A box of a CT, int16 HU, and where it sits in the full volume.

    Attributes:
        hu: (index, row, col) int16 array, often a read-only memory map.
        origin_irc: voxel index in the full volume of ``hu[0, 0, 0]``.
        volume_shape_irc: shape of the full volume.
        geometry: geometry of the full volume (xyz <-> irc of the full grid).
        series_uid: the series.
    """

    hu: np.ndarray
    origin_irc: tuple[int, int, int]
    volume_shape_irc: tuple[int, int, int]
    geometry: Geometry
    series_uid: str

    def crop(self, center_irc, size_irc, pad_hu: int = HU_AIR) -> np.ndarray:
        """A ``size_irc`` int16 crop around full-volume voxel ``center_irc``, by :mod:`ct_pipeline.crops`'
        convention; voxels outside the stored region (beyond the volume's faces) are ``pad_hu``."""
        start = crop_start_irc(center_irc, size_irc) - np.asarray(self.origin_irc, dtype=np.int64)
        return cut_crop(self.hu, start, size_irc, pad_hu)


def region_box(
    volume_shape_irc: tuple[int, int, int],
    centers_irc: np.ndarray,
    is_nodule: np.ndarray,
    spec: RegionSpec,
    native_spacing_irc_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel box covering every candidate's crop, clipped to the volume.

    ``centers_irc`` are rounded voxel centres; ``native_spacing_irc_mm`` (the volume's) only
    matters for a spec with ``crop_spacing_mm``.
    """
    shape = np.asarray(volume_shape_irc, dtype=np.int64)
    if len(centers_irc) == 0:
        return np.zeros(3, np.int64), np.zeros(3, np.int64)
    before, after = native_extent_irc(spec.crop_irc, spec.crop_spacing_mm, native_spacing_irc_mm)
    margin = np.where(np.asarray(is_nodule, bool)[:, None], np.asarray(spec.nodule_margin_irc), 0)
    lo = np.asarray(centers_irc, dtype=np.int64) - before - margin
    hi = np.asarray(centers_irc, dtype=np.int64) + after + margin
    start = np.clip(lo.min(axis=0), 0, shape)
    stop = np.clip(hi.max(axis=0), 0, shape)
    return start, np.maximum(stop, start)


_REREADS = 5  # reads of an entry that another process keeps replacing, before calling it missing
PARTIAL_SUFFIX = ".partial"
LOCK_SUBDIR = "locks"


class _AtomicDisk(diskcache.Disk):
    """diskcache's file storage, but each value file appears only when whole (temporary name, rename)."""

    def _write(self, full_path, iterator, mode, encoding=None):
        partial = full_path + PARTIAL_SUFFIX
        try:
            size = super()._write(partial, iterator, mode, encoding)
            os.replace(partial, full_path)
        except BaseException:
            with suppress(OSError):
                os.unlink(partial)
            raise
        return size


class _EntryMoved(Exception):
    """The entry's data file was replaced by another process while this one read it."""


class CropCache:
    """The crop cache in ``cache_dir/crops``. Safe for many processes at once.

    Each process verifies a region's CRC-32 once, the first time it opens it, and then keeps
    the memory map (per instance, not per module).
    """

    def __init__(self, cache_dir: Path, size_limit_gb: float = DEFAULT_SIZE_LIMIT_GB):
        self.directory = Path(cache_dir) / CACHE_SUBDIR
        self.size_limit_gb = size_limit_gb
        self._cache: diskcache.Cache | None = None
        self._open: dict[str, CachedRegion] = {}

    # A CropCache travels to DataLoader workers by pickling: SQLite handles and memory maps do not.
    def __getstate__(self):
        return {"directory": self.directory, "size_limit_gb": self.size_limit_gb}

    def __setstate__(self, state):
        self.__init__(state["directory"].parent, state["size_limit_gb"])

    @property
    def store(self) -> diskcache.Cache:
        if self._cache is None:
            warning = network_filesystem_warning(self.directory)
            if warning:
                log.warning(warning)
            self._cache = diskcache.Cache(
                str(self.directory),
                timeout=120,  # SQLite busy timeout: writers queue instead of failing
                size_limit=int(self.size_limit_gb * 2**30),
                eviction_policy="least-recently-stored",
                cull_limit=4,
                disk=_AtomicDisk,
            )
        return self._cache

    def close(self) -> None:
        self._open.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def contains(self, key: str) -> bool:
        """Whether a complete entry is stored: its metadata and a data file of the full size.

        (The voxels' checksum is verified on :meth:`get`; a data file a ``$TMPDIR`` cleaner
        deleted or a full disk cut short makes the entry absent here, so it is filled again.)
        """
        meta_text = self.store.get(f"meta|{key}", retry=True)
        if meta_text is None:
            return False
        handle = self.store.get(f"data|{key}", read=True, retry=True)
        if handle is None:  # listed, but its file is gone
            return False
        with handle:
            path = getattr(handle, "name", None)
        if not isinstance(path, str):  # small regions live inside SQLite
            return True
        try:
            with open(path, "rb") as data:
                version = np.lib.format.read_magic(data)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(data)
                header_bytes = data.tell()
            expected = header_bytes + int(np.prod(shape)) * np.dtype(dtype).itemsize
            return os.path.getsize(path) == expected and list(shape) == json.loads(meta_text)["shape_irc"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return False

    @contextmanager
    def filling(self, key: str) -> Iterator[None]:
        """Hold the fill lock of ``key`` (other processes filling the same key wait here).

        An OS file lock: released by the kernel when its holder dies, so a killed fill never
        blocks the next one.
        """
        folder = self.directory / LOCK_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".lock")
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def put(self, key: str, region: CachedRegion) -> None:
        """Store ``region`` under ``key`` (data first, then the metadata that makes it visible).

        Raises:
            OutputError: the cache's disk is full, read-only or not ours to write.
        """
        try:
            self._put(key, region)
        # SQLite says "database or disk is full" or "attempt to write a readonly database" itself
        except (OSError, sqlite3.OperationalError) as err:
            raise write_failure(self.directory, err, "--cache-dir") from err

    def _put(self, key: str, region: CachedRegion) -> None:
        hu = np.ascontiguousarray(region.hu, dtype=np.int16)
        buffer = io.BytesIO()
        np.save(buffer, hu, allow_pickle=False)
        buffer.seek(0)
        self.store.set(f"data|{key}", buffer, read=True, retry=True)
        meta = {
            "series_uid": region.series_uid,
            "origin_irc": [int(v) for v in region.origin_irc],
            "shape_irc": [int(v) for v in hu.shape],
            "volume_shape_irc": [int(v) for v in region.volume_shape_irc],
            "origin_xyz": list(region.geometry.origin_xyz),
            "spacing_xyz": list(region.geometry.spacing_xyz),
            "direction": list(region.geometry.direction),
            "crc32": zlib.crc32(memoryview(hu).cast("B")),
        }
        self.store.set(f"meta|{key}", json.dumps(meta), retry=True)
        self._open.pop(key, None)

    def get(self, key: str) -> CachedRegion | None:
        """The region under ``key``, or None when missing or found corrupt (then it is deleted).

        Another process may replace the entry while this one reads it (two DataLoader workers, or
        two ranks, filling the same series): diskcache then removes the old data file between
        our look-up and our read. That is not corruption: read the entry again (a few times),
        and if it keeps moving report it missing without deleting anything.
        """
        if key in self._open:
            return self._open[key]
        for _ in range(_REREADS):
            try:
                region = self._read(key)
            except _EntryMoved:
                continue
            except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
                self._drop_corrupt(key, str(err))
                return None
            if region is not None:
                self._open[key] = region
            return region
        # Still no data file after several reads: nobody is replacing it, it is gone (a $TMPDIR
        # cleaner, a manual delete). The metadata alone would make the entry look present forever.
        self._drop_corrupt(key, "its data file is missing")
        return None

    def _drop_corrupt(self, key: str, reason: str) -> None:
        log.warning(
            "cache entry for series %s is corrupt (%s); deleting it, it will be recomputed", key.split("|")[1], reason
        )
        self.delete(key)

    def _read(self, key: str) -> CachedRegion | None:
        """One attempt at :meth:`get` (raises _EntryMoved when a file vanished under us)."""
        meta_text = self.store.get(f"meta|{key}", retry=True)
        if meta_text is None:
            return None
        meta = json.loads(meta_text)
        handle = self.store.get(f"data|{key}", read=True, retry=True)
        if handle is None:  # diskcache answers None when the file went between look-up and open
            raise _EntryMoved
        with handle:
            path = getattr(handle, "name", None)
            try:
                if isinstance(path, str):
                    hu = np.load(path, mmap_mode="r", allow_pickle=False)
                else:  # small regions live inside SQLite
                    hu = np.load(io.BytesIO(handle.read()), allow_pickle=False)
            except FileNotFoundError as err:
                raise _EntryMoved from err
        if list(hu.shape) != meta["shape_irc"] or hu.dtype != np.int16:
            raise ValueError(f"shape {hu.shape} {hu.dtype}, expected {meta['shape_irc']} int16")
        if zlib.crc32(memoryview(np.ascontiguousarray(hu)).cast("B")) != meta["crc32"]:
            raise ValueError("checksum mismatch")
        return CachedRegion(
            # A plain ndarray view of the memory map: slicing np.memmap runs Python code per slice.
            hu=hu.view(np.ndarray),
            origin_irc=tuple(meta["origin_irc"]),
            volume_shape_irc=tuple(meta["volume_shape_irc"]),
            geometry=Geometry(tuple(meta["origin_xyz"]), tuple(meta["spacing_xyz"]), tuple(meta["direction"])),
            series_uid=meta["series_uid"],
        )

    def delete(self, key: str) -> None:
        self._open.pop(key, None)
        self.store.delete(f"meta|{key}", retry=True)
        self.store.delete(f"data|{key}", retry=True)

    def data_path(self, key: str) -> Path | None:
        """Where the region's file lives (for tests and `ct cache info`)."""
        handle = self.store.get(f"data|{key}", read=True, retry=True)
        if handle is None:
            return None
        with handle:
            name = getattr(handle, "name", None)
        return Path(name) if isinstance(name, str) else None

    def partial_files(self) -> list[Path]:
        """Data files of fills that did not finish (killed, disk full), or of one in progress now."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.rglob(f"*.val{PARTIAL_SUFFIX}"))

    def stats(self) -> dict:
        keys = [k for k in self.store.iterkeys() if isinstance(k, str) and k.startswith("meta|")]
        partial = self.partial_files()
        return {
            "directory": str(self.directory),
            "regions": len(keys),
            "series": len({k.split("|")[2] for k in keys}),
            "bytes": int(self.store.volume()),
            "size_limit_bytes": int(self.size_limit_gb * 2**30),
            "partial_files": len(partial),
            "partial_bytes": sum(_size(p) for p in partial),
        }

    def clear(self) -> int:
        """Remove every entry and every partial file; returns the number of entries removed."""
        self._open.clear()
        removed = int(self.store.clear(retry=True))
        for path in self.partial_files():
            with suppress(OSError):
                path.unlink()
        return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
