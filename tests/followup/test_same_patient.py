"""`ct compare` of scans that are not one patient's: one WARNING line per sign, in every output.

Two signs (:func:`ct_pipeline.followup.comparison.same_patient_warnings`): the DICOM PatientIDs
differ, and the lungs overlap less after registration than two scans of one patient do. The
findings come from empty result files: what is checked is the registration and what the command
says about it, not detection.
"""

from __future__ import annotations

import csv
import json

import pytest

from ct_pipeline.diagnosis.provenance import with_source
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.diagnosis.result_files import write_result_file
from ct_pipeline.followup.comparison import SAME_PATIENT_OVERLAP, same_patient_warnings
from ct_pipeline.followup.registration import Registration
from ct_pipeline.loading import load_ct
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from tests.helpers.cli_process import run_ct
from tests.helpers.folder_digest import tree_digest

PATIENT_ID_WARNING = "WARNING: PRIOR's PatientID 'SYNTH-7-1' differs from CURRENT's 'SYNTH-7-2': ct compare follows one"
OVERLAP_WARNING = "WARNING: the lungs overlap only "


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two synthetic patients as DICOM (PatientIDs SYNTH-7-1 and -2), each with its follow-up,
    and a result file without findings for every scan."""
    root = tmp_path_factory.mktemp("patients")
    write_synthetic_dataset(SynthConfig(out_dir=root, n_series=2, seed=7, size="small", dicom=True, follow_up=True))
    with open(root / "followup_pairs.csv", encoding="utf-8", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    results = tmp_path_factory.mktemp("results")
    for folder in (root / "dicom").iterdir():
        volume = load_ct(folder)
        # recorded with the fingerprint of the bytes it was made from, as ct diagnose --out records it
        empty = DiagnosisResult(volume.series_uid, (), source=volume.source, shape_irc=volume.shape_irc)
        write_result_file(results, volume.series_uid, empty.with_provenance(with_source({}, volume.source_files)))
    scans = [(root / "dicom" / p["prior_seriesuid"], root / "dicom" / p["current_seriesuid"]) for p in pairs]
    return {"root": root, "results": results, "scans": scans}


def _one_line_each(text: str, *starts: str) -> None:
    lines = text.splitlines()
    for start in starts:
        assert sum(line.startswith(start) for line in lines) == 1, (start, text)
    assert sum(line.startswith("WARNING:") for line in lines) == len(starts), text


@pytest.mark.slow
def test_two_different_patients_are_compared_with_both_warnings_in_table_json_and_report(study, tmp_path):
    prior = study["scans"][0][0]  # patient 1
    current = study["scans"][1][1]  # patient 2's follow-up
    results = ("--prior-results", study["results"], "--current-results", study["results"])
    inputs = tree_digest(study["root"], study["results"])

    table = run_ct("compare", prior, current, *results, "--interval-days", "90")
    assert table.exit_code == 0, table.output
    _one_line_each(table.stdout, PATIENT_ID_WARNING, OVERLAP_WARNING)
    overlap_line = next(line for line in table.stdout.splitlines() if line.startswith(OVERLAP_WARNING))
    after = float(overlap_line[len(OVERLAP_WARNING) :].split()[0])
    assert after < SAME_PATIENT_OVERLAP and f"below the {SAME_PATIENT_OVERLAP:g} " in overlap_line

    report = tmp_path / "report"
    runs = [
        run_ct("compare", prior, current, *results, "--interval-days", "90", "--json", *extra)
        for extra in (("--report", report), ())
    ]
    for run in runs:
        assert run.exit_code == 0, run.output
        data = json.loads(run.stdout)
        assert ["WARNING: " + w for w in data["warnings"]] == [
            line for line in run.stderr.splitlines() if line.startswith("WARNING:")
        ]
        _one_line_each(run.stderr, PATIENT_ID_WARNING, OVERLAP_WARNING)
        assert data["registration"]["lung_overlap_after"] == pytest.approx(after, abs=5e-4)
    # The same inputs give the same registration, to the last digit (issue #26: 0.355, 0.369, 0.379).
    first, second = (json.loads(run.stdout)["registration"] for run in runs)
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}
    page = (report / "index.html").read_text(encoding="utf-8")
    assert page.count("<p class='disclaimer'>WARNING: ") == 2 and "PatientID &#x27;SYNTH-7-1&#x27; differs" in page
    assert set(tree_digest(report)) == {report / "index.html"}  # no findings, no pictures
    assert tree_digest(study["root"], study["results"]) == inputs


@pytest.mark.slow
def test_a_true_follow_up_pair_is_compared_without_a_warning(study):
    prior, current = study["scans"][0]
    result = run_ct(
        "compare", prior, current, "--prior-results", study["results"], "--current-results", study["results"], "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["warnings"] == [] and "WARNING" not in result.output
    assert data["registration"]["lung_overlap_after"] > SAME_PATIENT_OVERLAP


def _registration(overlap_after: float) -> Registration:
    return Registration((1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), (0, 0, 0), 0.0, 0.0, 0.5, overlap_after, 1.0)


@pytest.mark.parametrize(
    "patient_ids, overlap, expected",
    [
        (("A", "A"), 0.99, []),
        (("A", ""), 0.99, []),  # one unknown (not DICOM): nothing to compare
        (("A ", "A"), 0.99, []),  # DICOM pads with a space
        (("A", "B"), 0.99, ["PRIOR's PatientID 'A' differs from CURRENT's 'B'"]),
        (("", ""), SAME_PATIENT_OVERLAP - 0.001, [f"the lungs overlap only {SAME_PATIENT_OVERLAP - 0.001:.3f} after"]),
        (("", ""), SAME_PATIENT_OVERLAP, []),
    ],
)
def test_the_warnings_name_the_patient_ids_and_the_overlap(patient_ids, overlap, expected):
    warnings = same_patient_warnings(patient_ids, _registration(overlap))
    assert len(warnings) == len(expected) and all(w.startswith(e) for w, e in zip(warnings, expected)), warnings
