"""What "nothing changed" compares: the SHA-256 of every file below some folders, before and after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_digest(*folders: Path) -> dict[Path, str]:
    """``{path: sha256 of its bytes}`` for every file below each of ``folders`` (full paths as keys).

    A link to a file counts as that file's bytes. A link to a folder is not walked into (one back
    up the tree would never end), and a link that leads nowhere (dangling, or a loop) has no bytes:
    both count as ``"link to TARGET"``, so that removing or re-pointing a link is a change too.
    """
    digests: dict[Path, str] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_symlink():
                digests[path] = f"link to {os.readlink(path)}"
    return digests
