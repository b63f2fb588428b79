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


def run_ct(*args: object, input: str | None = None, env: dict[str, str] | None = None):
    """`ct ARGS` in process, ``input`` on its stdin, ``env`` added to the environment; the result has
    exit_code, stdout and stderr (apart: the result's ``output`` is both)."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


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
        cwd=REPO,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


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


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (R running, S sleeping, T stopped, Z zombie...); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and ')': the fields start after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def descendants(pid: int, *, direct: bool = False) -> set[int]:
    """The live processes below ``pid`` (Linux /proc): its children only when ``direct``, else every generation."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended while the listing was read
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
        if direct:
            break
    return found
