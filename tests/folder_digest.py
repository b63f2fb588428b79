"""What 'nothing changed' compares: every file below a folder by relative path and SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_digest(*folders: Path) -> dict[str, str]:
    """``{"<folder>/<relative path>": sha256}`` of every file below each folder (links followed)."""
    digests: dict[str, str] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digests[f"{folder.name}/{path.relative_to(folder).as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
