"""`ct compare` through the CLI on `ct synth --follow-up` pairs, with the truth's nodules as findings.

The findings come from result files (``--prior-results``/``--current-results``) made from the
truth table, so what is checked is everything after detection: registration, pairing in the
registered frame, the interval from the DICOM StudyDates, volume change, the JSON, the report
and the errors. (With trained models, benchmarks/followup.py measures the whole chain.)
"""

from __future__ import annotations

import csv
import json

import pytest

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.diagnosis.result_files import write_result_file
from ct_pipeline.diagnosis.volumetry import MaskMeasurement
from ct_pipeline.loading import load_ct
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from tests.helpers.cli_process import run_ct


def _run(*args):
    return run_ct("compare", *args)


def _truth_result(volume, rows, when: str) -> DiagnosisResult:
    """The scan's true nodules as findings, their true volumes as measurements, most probable first."""
    findings = []
    for rank, row in enumerate(r for r in rows if r[f"{when}_coordX"]):
        xyz = tuple(float(row[f"{when}_coord{a}"]) for a in "XYZ")
        volume_mm3 = float(row[f"{when}_volume_mm3"])
        measured = MaskMeasurement(volume_mm3, 9.0, 8.0, 8.5, 0, 20.0, 30.0, 100)
        irc = tuple(int(v) for v in volume.geometry.xyz_to_irc_rounded(xyz))
        findings.append(Finding(xyz, irc, float(row[f"{when}_diameter_mm"]), 0.99 - 0.01 * rank, measurement=measured))  # type: ignore[arg-type]
    return DiagnosisResult(volume.series_uid, tuple(findings), source=volume.source, shape_irc=volume.shape_irc)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One pair as DICOM, with result files of both scans' true nodules."""
    root = tmp_path_factory.mktemp("fu")
    write_synthetic_dataset(SynthConfig(out_dir=root, n_series=2, seed=7, size="small", dicom=True, follow_up=True))
    with open(root / "followup_truth.csv", encoding="utf-8", newline="") as handle:
        truth = list(csv.DictReader(handle))
    with open(root / "followup_pairs.csv", encoding="utf-8", newline="") as handle:
        pair = next(
            p for p in csv.DictReader(handle) if sum(r["prior_seriesuid"] == p["prior_seriesuid"] for r in truth) >= 2
        )
    rows = [r for r in truth if r["prior_seriesuid"] == pair["prior_seriesuid"]]
    prior, current = (root / "dicom" / pair[k] for k in ("prior_seriesuid", "current_seriesuid"))
    results = root / "results"
    for folder, when in ((prior, "prior"), (current, "current")):
        volume = load_ct(folder)
        write_result_file(results, volume.series_uid, _truth_result(volume, rows, when))
    return {"prior": prior, "current": current, "results": results, "rows": rows, "pair": pair, "root": root}


def test_every_nodule_is_paired_with_its_true_volume_change_and_the_rest_listed_apart(study, tmp_path):
    report = tmp_path / "report"
    result = _run(
        study["prior"],
        study["current"],
        "--prior-results",
        study["results"],
        "--current-results",
        study["results"],
        "--json",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["interval_days"] == float(study["pair"]["interval_days"]) and data["interval_from"] == "StudyDate"
    rows = study["rows"]
    continuing = [r for r in rows if r["status"] in ("grown", "stable", "shrunk")]
    assert len(data["pairs"]) == len(continuing) >= 1
    for pair, row in zip(data["pairs"], continuing):
        assert pair["prior"]["center_xyz"] == pytest.approx([float(row[f"prior_coord{a}"]) for a in "XYZ"], abs=1e-3)
        assert pair["volume_change_pct"] == pytest.approx(float(row["volume_change_pct"]), abs=0.2)
        assert pair["distance_mm"] < 1.0  # the registration put the current centre onto the prior one
        assert (pair["doubling_time_days"] is not None) == (row["status"] == "grown")
    assert len(data["vanished"]) == sum(r["status"] == "vanished" for r in rows)
    assert len(data["new"]) == sum(r["status"] == "new" for r in rows)
    assert data["registration"]["lung_overlap_after"] > 0.97
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "not a medical device" in page and "pair_01_prior.png" in page and (report / "pair_01_current.png").is_file()


def test_the_table_names_the_pairs_and_says_it_is_research_software(study):
    result = _run(
        study["prior"],
        study["current"],
        "--prior-results",
        study["results"],
        "--current-results",
        study["results"],
        "--interval-days",
        "30",
    )
    assert result.exit_code == 0, result.output
    assert "seen in both scans" in result.stdout and "interval 30 days" in result.stdout
    assert "not for clinical decisions" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("{prior}", "{prior}", "--prior-results", "{results}", "--current-results", "{results}"), "same series"),
        (("{prior}", "{current}", "--prior-results", "{root}/candidates.csv"), "not a readable result"),
        (("{prior}", "{current}", "--prior-results", "{root}/subset0"), "no result of series"),
        (("{prior}", "{current}", "--prior-results", "{root}/nothing-here"), "no such file or folder"),
        (
            ("{current}", "{prior}", "--prior-results", "{results}", "--current-results", "{results}"),
            "earlier scan first",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(study, args, message):
    result = _run(*[a.format(**study) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
