"""`ct synth` on the command line: output, summary line, and exit code 2 with one line on bad input."""

from __future__ import annotations

import re

import pytest

from tests.helpers.cli_process import run_ct


def test_synth_small(tmp_path):
    out = tmp_path / "demo"
    result = run_ct("synth", str(out), "--series", "2", "--size", "small", "--seed", "4")
    assert result.exit_code == 0, result.output
    match = re.search(r"wrote 2 series \((\d+) nodules, (\d+) candidates\) to (.+) in [\d.]+ s", result.output)
    assert match, result.output
    n_nodules = len((out / "annotations.csv").read_text().splitlines()) - 1
    n_candidates = len((out / "candidates.csv").read_text().splitlines()) - 1
    assert (int(match[1]), int(match[2])) == (n_nodules, n_candidates)
    assert len(list((out / "subset0").glob("*.mhd"))) == 2
    assert not (out / "dicom").exists()
    assert "--series 2 --seed 4 --size small" in (out / "README.txt").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--series", "0"], r"--series 0 must be a whole number from 1 to 10000"),
        (["--seed", "-3"], r"--seed -3 must be a whole number from 0 to 4294967295"),
        (["--oblique-fraction", "2"], r"oblique-fraction 2.0 must be a number from 0 to 1"),
    ],
)
def test_bad_options_exit_2(tmp_path, args, message):
    result = run_ct("synth", str(tmp_path / "x"), "--size", "small", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and re.match(rf"^error: {message}", lines[0]), result.output
    assert not (tmp_path / "x").exists()


def test_non_empty_folder_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_ct("synth", str(tmp_path), "--size", "small", "--series", "1")
    assert result.exit_code == 2
    assert "is not empty; pick a new folder or pass --overwrite" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
