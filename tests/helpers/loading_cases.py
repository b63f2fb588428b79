"""Hand-made MetaImage files for the loaders' bad-input tests (running `ct`: tests/helpers/cli_process.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_raw_mhd(path: Path, voxels: np.ndarray, element_type: str, spacing_xyz=(0.8, 0.8, 2.0), **extra: str) -> Path:
    """``voxels`` (index, row, col) as ``path`` + ``<stem>.raw`` in its little-endian dtype; ``extra`` overrides keys."""
    keys = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "ElementSpacing": " ".join(str(v) for v in spacing_xyz),
        "DimSize": " ".join(str(n) for n in voxels.shape[::-1]),
        "ElementType": element_type,
        "ElementDataFile": path.with_suffix(".raw").name,
        **extra,
    }
    raw = path.parent / keys["ElementDataFile"]
    raw.write_bytes(np.ascontiguousarray(voxels).astype(voxels.dtype.newbyteorder("<")).tobytes())
    path.write_text("".join(f"{key} = {value}\n" for key, value in keys.items()))
    return path
