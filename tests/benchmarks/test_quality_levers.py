"""The levers section: each run against its family's recipe run, test-set figures first."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality_levers


def _run(seed: int, val_cpm: float, test_cpm: float, sens: float) -> dict:
    def block(cpm: float, scans: int) -> dict:
        rates = {"0.125": sens, "0.25": sens + 0.1, "1.0": sens + 0.2, "8.0": 0.95}
        return {
            "cpm": cpm,
            "cpm_ci95": [cpm - 0.1, cpm + 0.1],
            "scans": scans,
            "nodules": 70,
            "detected": 66,
            "sensitivity_at_fp_per_scan": rates,
        }

    test = block(test_cpm, 40) | {"candidate_recall": {"recall": 0.97, "candidates_per_scan": 300.5}}
    return {"seed": seed, "detection": block(val_cpm, 10), "test": test, "seconds": {"total": 900.0}}


def test_a_lever_is_reported_against_its_familys_recipe_run(tmp_path):
    for label, run in (("base", _run(0, 0.70, 0.80, 0.50)), ("own", _run(0, 0.75, 0.88, 0.72))):
        (tmp_path / label).mkdir()
        (tmp_path / label / "quality.json").write_text(json.dumps(run))
    runs = quality_levers._runs([f"standard:recipe={tmp_path / 'base'}", f"standard:own-0.25={tmp_path / 'own'}"])
    figures = quality_levers.lever_figures(
        "standard", "own-0.25", runs["standard"]["own-0.25"], runs["standard"]["recipe"]
    )
    cpm, sensitivity, recall = figures
    assert (cpm.value, cpm.baseline, cpm.ratio) == (0.88, 0.8, pytest.approx(1.1))
    assert "test 0.880 (0.78-0.98) over 40 scans" in cpm.note and "validation 0.750 (0.65-0.85)" in cpm.note
    assert (sensitivity.value, sensitivity.baseline) == (0.72, 0.5)
    assert recall.value == 0.97
    own_baseline = quality_levers.lever_figures(
        "standard", "recipe", runs["standard"]["recipe"], runs["standard"]["recipe"]
    )
    assert own_baseline[0].baseline is None and own_baseline[0].ratio is None


def test_a_run_without_a_test_set_is_refused(tmp_path):
    (tmp_path / "quality.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(SystemExit, match="no test block"):
        quality_levers._runs([f"standard:recipe={tmp_path}"])
