"""What 'no file changed' compares: every file below a folder, by content."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(*folders: Path) -> dict[str, str]:
    """``{path relative to its folder (prefixed by the folder's name): sha256 of its bytes}`` for every file."""
    return {
        f"{folder.name}/{path.relative_to(folder)}": hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
