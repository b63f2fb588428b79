"""Running `ct` from a test: in process (typer's CliRunner), or as a user's shell would, in a subprocess
of its own (for kills, signals and crashes that would take the test process with them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

REPO = Path(__file__).resolve().parents[2]


def run_ct(*args: object, input: str | None = None):
    """`ct ARGS` in process, ``input`` on its stdin; the result has exit_code, stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def words(text: str) -> str:
    """``text`` with every run of white space one space: rich wraps long lines at the console width."""
    return " ".join(text.split())


def error_line(result) -> str:
    """The one ``error: ...`` line on stderr (as :func:`words`); fails unless there is exactly one,
    and no traceback."""
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return words(lines[0])


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `ct` subprocess: this checkout importable, its cache in ``tmp_path/cache``."""
    return {**os.environ, "PYTHONPATH": str(REPO), "CT_CACHE_DIR": str(tmp_path / "cache")}


def start_cli(tmp_path: Path, *args: object) -> subprocess.Popen:
    """Start `ct ARGS` with its cache in ``tmp_path/cache``; stdout and stderr are piped (UTF-8)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        errors="replace",
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
