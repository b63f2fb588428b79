"""Walking a data root: every file below it once, following folder links without looping.

Data roots are often assembled from links (``subset0 -> /scratch/luna/subset0``), so a link to a
folder is followed like a folder; a folder reached a second time (a link back up, a loop, or two
links to one place) is not walked again, so nothing is found twice and no walk is endless.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def walk_files(root: Path) -> Iterator[Path]:
    """Every file below ``root`` (hidden files and folders left out), in sorted order per folder.

    A name that is a broken or looping link is yielded too (as a file), so that its reader can
    report it as unreadable instead of it silently missing from a series.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            stat = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        # (device, inode) names a folder whatever path or link led to it.
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name
