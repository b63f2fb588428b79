"""The content fingerprint of a series' files: a result is reused only for the same bytes.

Names, sizes and mtimes miss a file rewritten in place with its mtime restored (``rsync -t``,
``os.utime``, a restore from backup) and say nothing of files outside the folder a result
names; the bytes cannot lie. Hashing re-reads what the loader read, mostly from the page
cache; BENCHMARKS.md has its cost against a diagnosis (benchmarks/bench_fingerprint.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

PREFIX = "sha256:"


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, streamed (the one file hash: checkpoints and series alike)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_fingerprint(paths: Sequence[str | os.PathLike]) -> str:
    """``sha256:<hex>`` over the SHA-256 of each file's bytes, in the given order ("" if one is unreadable).

    Only the bytes count, not the names: a series moved or copied elsewhere keeps its fingerprint.
    """
    if not paths:
        return ""
    digest = hashlib.sha256()
    try:
        for path in paths:
            digest.update(bytes.fromhex(sha256_of_file(path)))
    except OSError:
        return ""  # nothing to compare with: never equal to a recorded fingerprint
    return PREFIX + digest.hexdigest()


def is_content_fingerprint(value: object) -> bool:
    """True for a fingerprint :func:`content_fingerprint` made (not an older ct's names/sizes/mtimes one)."""
    return isinstance(value, str) and value.startswith(PREFIX) and len(value) == len(PREFIX) + 64
