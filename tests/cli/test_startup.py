"""`ct --help` and a mistyped option answer before the heavy libraries load (they take 0.5-3 s to import)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.cli_process import REPO

HEAVY = ("torch", "SimpleITK", "pandas")

# Runs `ct ARGV` as `python -m cli` does, then reports its exit code and which heavy modules were imported.
_PROBE = """
import json, runpy, sys
code = 0
try:
    runpy.run_module("cli", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.__stderr__)
"""


def _probe(*argv: str) -> dict:
    script = _PROBE % (HEAVY,)
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (("--help",), 0),
        (("diagnose", "--help"), 0),
        (("train-seg", "--help"), 0),
        (("diagnose", "--bogus"), 2),
        (("merge",), 2),  # DIR missing
        (("diagnose", "x", "--device", "gpu"), 2),  # the spelling is checked before torch could say which it has
    ],
)
def test_help_and_usage_errors_load_no_heavy_library(argv, code):
    probe = _probe(*argv)
    assert probe == {"code": code, "loaded": []}, f"ct {' '.join(argv)}"
