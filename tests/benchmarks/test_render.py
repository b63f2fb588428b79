"""BENCHMARKS.md shows each command as a user would type it, not with the paths of the machine it ran on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import benchmarks.common
import benchmarks.run
from benchmarks.common import RESULTS_DIR, Section, typed_command

# Where this project's machines keep work; README examples such as /data/luna16 or /scratch/... are typed by users.
_MACHINE_PATH = re.compile(r"(^|[\s=`])/(work|tmp|home|root)/")


@pytest.mark.parametrize(
    ("recorded", "typed"),
    [
        ("ct diagnose --data-root /tmp/x1/data --out /work/runs/out", "ct diagnose --data-root DATA --out OUT"),
        (
            "ct prepcache --data-root=/work/d --cache-dir=/scratch/c --workers 2",
            "ct prepcache --data-root=DATA --cache-dir=CACHE --workers 2",
        ),
        # Positional paths: relative to the folder they share, where a user would run the command.
        (
            "python -m benchmarks.volumetry --record /w/q/standard-0/out /w/q/standard-0/data /w/q/site-b-0/out",
            "python -m benchmarks.volumetry --record standard-0/out standard-0/data site-b-0/out",
        ),
        (
            "python -m benchmarks.followup --record /w/fu-std /w/q/standard-0/out/runs",
            "python -m benchmarks.followup --record fu-std q/standard-0/out/runs",
        ),
        ("make bench BOOK_CODE_DIR=/home/me/dlwpt-code", "make bench BOOK_CODE_DIR=dlwpt-code"),
        # Already typed, system paths and addresses: unchanged.
        ("python -m benchmarks.run load", "python -m benchmarks.run load"),
        (
            "ct synth OUT --series 3 2>/dev/null; see https://luna16.grand-challenge.org/Data/",
            "ct synth OUT --series 3 2>/dev/null; see https://luna16.grand-challenge.org/Data/",
        ),
    ],
)
def test_a_recorded_command_is_typed_with_placeholders_and_relative_paths(recorded, typed):
    assert typed_command(recorded) == typed


def test_the_renderer_writes_an_absolute_path_in_the_placeholder_form(tmp_path, monkeypatch):
    """A record saved before ``typed_command`` existed (or written by hand) renders clean too."""
    command = "python -m benchmarks.followup --record /work/exp/fu-std /work/exp/q/standard-0/out/runs"
    record = {
        "key": "followup",
        "title": "Follow-up",
        "setup": "s",
        "expectation": "",
        "figures": [],
        "command": command + " --data-root /tmp/pytest-7/data",
        "measured_at": "2026-12-02 07:40 UTC",
        "machine": {"cpu": "cpu", "cores": "2", "python": "3.11", "torch": "2", "numpy": "2", "os": "linux"},
    }
    (tmp_path / "followup.json").write_text(json.dumps(record))
    monkeypatch.setattr(benchmarks.run, "RESULTS_DIR", tmp_path)
    text = benchmarks.run.render()
    assert "Command: `python -m benchmarks.followup --record fu-std q/standard-0/out/runs --data-root DATA`" in text
    assert "/work/" not in text and "/tmp/" not in text


def test_a_saved_section_records_the_typed_command(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(benchmarks.common, "machine_facts", lambda: {})  # no torch import for this
    command = "python -m benchmarks.volumetry --record /work/q/a/out /work/q/b/data"
    Section(key="k", title="t", command=command, setup="").save()
    recorded = json.loads((tmp_path / "k.json").read_text())["command"]
    assert recorded == "python -m benchmarks.volumetry --record a/out b/data"


def test_no_committed_result_or_page_names_a_machine_path():
    pages = [RESULTS_DIR.parent.parent / "BENCHMARKS.md", RESULTS_DIR.parent.parent / "README.md"]
    commands = {p.name: json.loads(p.read_text())["command"] for p in sorted(RESULTS_DIR.glob("*.json"))}
    assert {name: c for name, c in commands.items() if typed_command(c) != c} == {}
    for page in pages:
        lines = [line for line in page.read_text(encoding="utf-8").splitlines() if _MACHINE_PATH.search(line)]
        assert not lines, (Path(page).name, lines[:3])
