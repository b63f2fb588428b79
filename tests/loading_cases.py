"""Helpers for the loaders' bad-input tests: run `ct`, read its one error line, snapshot folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.main import app


def run_ct(*args: object):
    """`ct ARGS` in-process; the result has exit_code, stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The one ``error: ...`` line on stderr (fails unless there is exactly one, and no traceback)."""
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return " ".join(lines[0].split())


def tree_sha256(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (by its relative path) -> sha256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


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
