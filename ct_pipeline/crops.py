"""The one crop convention of the classifiers, for training and for diagnosis.

A crop of ``crop_shape_irc`` voxels starts at ``center - crop_shape // 2`` (the candidate's rounded
voxel lands on voxel ``crop_shape // 2`` of the crop, the book's centring) and is padded with air
beyond the volume's faces; it is never shifted inward. The book shifted crops inward at the faces,
so the same model saw an edge candidate off centre at diagnosis and at the centre nowhere else;
keeping the candidate at the centre is what the classifier's centre head assumes.
"""

from __future__ import annotations

import numpy as np


def crop_start_irc(center_irc: np.ndarray, crop_shape_irc: tuple[int, int, int]) -> np.ndarray:
    """int64 first voxel (..., 3) of the crop around each rounded voxel centre (..., 3)."""
    return (
        np.rint(np.asarray(center_irc, dtype=np.float64)).astype(np.int64) - np.asarray(crop_shape_irc, np.int64) // 2
    )


def cut_crop(array: np.ndarray, start_irc: np.ndarray, crop_shape_irc: tuple[int, int, int], pad_value) -> np.ndarray:
    """Copy of ``array[start : start + crop_shape]`` (same dtype), ``pad_value`` where it leaves the array."""
    size = np.asarray(crop_shape_irc, dtype=np.int64)
    start = np.asarray(start_irc, dtype=np.int64)
    stop = start + size
    shape = np.asarray(array.shape, dtype=np.int64)
    if (start >= 0).all() and (stop <= shape).all():
        return np.array(array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]])
    out = np.full(tuple(int(n) for n in size), pad_value, dtype=array.dtype)
    src_lo, src_hi = np.maximum(start, 0), np.minimum(stop, shape)
    if (src_hi > src_lo).all():
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = array[
            src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
        ]
    return out
