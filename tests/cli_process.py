"""Running `ct` as a user's shell would: `python -m cli ...` in a subprocess of its own (for kills and signals)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_cli(tmp_path: Path, *args: object) -> subprocess.Popen:
    """Start `ct ARGS` with its cache in ``tmp_path/cache``; stdout and stderr are piped (UTF-8)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
    )  # fmt: skip
