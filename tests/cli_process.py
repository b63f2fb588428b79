"""Running `ct` as a user's shell would: `python -m cli ...` in a subprocess of its own (for kills and signals)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def start_cli(tmp_path: Path, *args: object) -> subprocess.Popen:
    """Start `ct ARGS` with its cache in ``tmp_path/cache``; stdout and stderr are piped (UTF-8)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
    )  # fmt: skip


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, point: str, timeout_s: float) -> None:
    """Poll until ``condition()`` holds; fail the test if ``process`` ends first or time runs out.

    ``point`` names what is waited for in the failure message, e.g. "the kill point".
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the command ended (exit {process.returncode}) before {point}: {err[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the command did not reach {point} in time")
        time.sleep(0.005)
