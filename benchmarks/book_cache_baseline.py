"""The book's raw-candidate cache, rebuilt as the baseline for ``bench_cache``.

What the book's ``p2ch1x/dsets.py`` does, with its names:
- ``getCt(series_uid)``: SimpleITK reads the .mhd, the array becomes float32 clipped to
  [-1000, 1000]; ``functools.lru_cache(1)`` keeps the last CT.
- ``getCtRawCandidate(series_uid, center_xyz, width_irc)``: the ``width_irc`` crop around the
  candidate (shifted inside the volume at the faces), memoized with
  ``@raw_cache.memoize(typed=True)`` in a diskcache ``FanoutCache`` of 64 shards, ``timeout=1``.
  The value is the tuple (float32 crop, center_irc), so it is pickled: the book's ``GzipDisk``
  only compresses ``bytes`` values and therefore leaves these uncompressed; plain ``Disk`` is used here.
- Its ``prepcache`` calls ``getCtRawCandidate`` for every candidate, sorted by series.
"""

from __future__ import annotations

from pathlib import Path

import diskcache
import numpy as np
import SimpleITK as sitk


class BookRawCache:
    """One book-style cache in ``directory``; ``mhd_paths`` maps series UID -> .mhd file."""

    def __init__(self, directory: Path, mhd_paths: dict[str, Path]):
        self.cache = diskcache.FanoutCache(str(directory), shards=64, timeout=1, size_limit=int(3e11))
        self._mhd_paths = mhd_paths
        self._ct_uid: str | None = None  # getCt's lru_cache(1)
        self._ct: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.getCtRawCandidate = self.cache.memoize(name="getCtRawCandidate", typed=True)(self._raw_candidate)

    def close(self) -> None:
        self.cache.close()

    def _get_ct(self, series_uid: str):
        if self._ct_uid != series_uid:
            image = sitk.ReadImage(str(self._mhd_paths[series_uid]))
            hu = np.array(sitk.GetArrayFromImage(image), dtype=np.float32)
            hu.clip(-1000, 1000, hu)
            origin = np.array(image.GetOrigin())
            spacing = np.array(image.GetSpacing())
            direction = np.array(image.GetDirection()).reshape(3, 3)
            self._ct_uid, self._ct = series_uid, (hu, origin, spacing, direction)
        return self._ct

    def _raw_candidate(self, series_uid: str, center_xyz: tuple, width_irc: tuple):
        hu, origin, spacing, direction = self._get_ct(series_uid)
        # the book's xyz2irc
        cri = ((np.array(center_xyz) - origin) @ np.linalg.inv(direction)) / spacing
        center_irc = tuple(int(v) for v in np.round(cri)[::-1])
        slices = []
        for axis, center in enumerate(center_irc):
            start = int(round(center - width_irc[axis] / 2))
            end = int(start + width_irc[axis])
            if start < 0:
                start, end = 0, int(width_irc[axis])
            if end > hu.shape[axis]:
                end, start = hu.shape[axis], int(hu.shape[axis] - width_irc[axis])
            slices.append(slice(start, end))
        return hu[tuple(slices)], center_irc

    def disk_bytes(self) -> int:
        return directory_bytes(Path(self.cache.directory))


def directory_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy on disk (allocated blocks, like ``du``)."""
    return sum(p.stat().st_blocks * 512 for p in Path(directory).rglob("*") if p.is_file())
