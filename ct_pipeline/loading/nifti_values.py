"""Non-finite voxels of a float NIfTI file, counted in the file's own bytes.

ITK's NIfTI reader (nifti1_io) silently replaces NaN and infinite voxels with 0, so the array
SimpleITK returns cannot show them: a NaN-filled region would be read as 0 HU (soft tissue).
The voxels are counted here straight from the file, slab by slab, for the float data types only
(integers cannot hold them, and most CT NIfTIs are int16, which costs nothing here).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ct_pipeline.errors import BadDataError

_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes: FLOAT32, FLOAT64
_CHUNK_BYTES = 1 << 24


def _layout(head: bytes, path: Path) -> tuple[str, int, int, int]:
    """(byte order, datatype, voxel count, vox_offset) from a NIfTI-1 or NIfTI-2 header."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            datatype = struct.unpack(order + "h", head[70:72])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            return order, datatype, int(np.prod(dims[1 : 1 + max(0, min(dims[0], 7))], dtype=np.int64)), offset
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            datatype = struct.unpack(order + "h", head[12:14])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            return order, datatype, int(np.prod(dims[1 : 1 + max(0, min(dims[0], 7))], dtype=np.int64)), offset
    raise BadDataError(f"{path}: not a NIfTI-1 or NIfTI-2 header (sizeof_hdr is neither 348 nor 540)")


def _open(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def nifti_non_finite(path: Path) -> tuple[int, int]:
    """(non-finite voxels, all voxels) of a NIfTI file as stored; (0, n) for integer data.

    Raises:
        BadDataError: the file cannot be read or its header is not NIfTI.
    """
    try:
        with _open(path) as handle:
            head = handle.read(540)
            order, datatype, n_voxels, offset = _layout(head, path)
            if datatype not in _FLOAT_TYPES:
                return 0, n_voxels
            dtype = np.dtype(order + _FLOAT_TYPES[datatype])
            handle.seek(offset)
            n_bad, left = 0, n_voxels * dtype.itemsize
            while left > 0:
                data = handle.read(min(_CHUNK_BYTES, left))
                if not data:
                    break  # a short file: ITK has already refused it, or will say so
                usable = len(data) - len(data) % dtype.itemsize
                n_bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=dtype))))
                left -= len(data)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise BadDataError(f"cannot read {path}: {err}") from err
    return n_bad, n_voxels
