"""`ct evaluate` end to end: the hard cases as CSV files, JSON numbers, the plot, and bad input (exit code 2)."""

from __future__ import annotations

import json

import pytest

from ct_pipeline.evaluation.tables import ANNOTATION_HEADER as ANNOT_HEADER
from ct_pipeline.evaluation.tables import PREDICTION_HEADER as PRED_HEADER
from tests.helpers.cli_process import run_ct

A, B, C = "1.2.3.1", "1.2.3.2", "1.2.3.3"


def _csv(path, header, rows):
    lines = [header] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# name: (findings, nodules, excluded or None, series list or None, expected cpm, expected extra fields)
CASES = {
    "empty predictions": ([], [(A, 0, 0, 0, 10)], None, None, 0.0, {"n_findings": 0, "n_false_positives": 0}),
    "scan with more than 100 findings": (
        [(A, 100 + i, 0, 0, 0.5 + i / 1000) for i in range(104)] + [(A, 0, 0, 0, 0.1), (B, 0, 0, 0, 0.95)],
        [(A, 0, 0, 0, 10), (B, 0, 0, 0, 10)],
        None,
        [A, B] + [f"1.2.4.{i}" for i in range(18)],
        0.5,
        {"n_findings": 101, "n_scans": 20, "n_detected": 1},
    ),
    "scan with findings but no nodules": (
        [(A, 50, 0, 0, 0.9), (A, 0, 0, 0, 0.75), (C, 0, 0, 0, 0.8), (C, 9, 9, 9, 0.7)],
        [(A, 0, 0, 0, 10)],
        None,
        [A, C],
        4 / 7,
        {"n_scans": 2, "n_false_positives": 3},
    ),
    "nodule hit by several findings": (
        [(A, 1, 0, 0, 0.9), (A, 0, 1, 0, 0.8), (B, 0, 0, 1, 0.7)],
        [(A, 0, 0, 0, 10), (B, 0, 0, 0, 10)],
        None,
        None,
        1.0,
        {"n_false_positives": 0, "n_detected": 2},
    ),
    "finding inside two nodules": (
        [(A, 50, 0, 0, 0.9), (A, 2, 0, 0, 0.7)],
        [(A, 0, 0, 0, 10), (A, 4, 0, 0, 10)],
        None,
        None,
        4 / 7,
        {"n_detected": 2, "n_nodules": 2},
    ),
    "findings on excluded annotations": (
        [(A, 50, 0, 3, 0.9), (A, 80, 0, 3, 0.8), (A, 0, 0, 0, 0.5)],
        [(A, 0, 0, 0, 10)],
        [(A, 50, 0, 0, -1), (A, 80, 0, 0, 4)],
        None,
        4 / 7,
        {"n_false_positives": 1},
    ),
    "probabilities with ties": (
        [(A, 0, 0, 0, 0.8), (A, 40, 0, 0, 0.8), (B, 40, 0, 0, 0.5)],
        [(A, 0, 0, 0, 10), (B, 0, 0, 0, 10)],
        None,
        None,
        2.875 / 7,
        {"sensitivity_at_fp": {"0.125": 0.125, "0.25": 0.25, "0.5": 0.5, "1": 0.5, "2": 0.5, "4": 0.5, "8": 0.5}},
    ),
    "series not in the evaluated set": (
        [(A, 50, 0, 0, 0.9), (A, 0, 0, 0, 0.75), (C, 0, 0, 0, 0.8), (C, 9, 9, 9, 0.7)],
        [(A, 0, 0, 0, 10)],
        None,
        None,
        4 / 7,
        {"n_scans": 1, "n_false_positives": 1, "n_findings": 2},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hard_cases(tmp_path, name):
    found, truth, excluded, series, cpm, fields = CASES[name]
    args = [
        "evaluate",
        _csv(tmp_path / "pred.csv", PRED_HEADER, found),
        "--annotations",
        _csv(tmp_path / "annotations.csv", ANNOT_HEADER, truth),
        "--json",
        "--bootstrap",
        "0",
    ]
    if excluded is not None:
        args += ["--excluded", _csv(tmp_path / "excluded.csv", ANNOT_HEADER, excluded)]
    if series is not None:
        args += ["--series-file", _csv(tmp_path / "seriesuids.csv", None, [(uid,) for uid in series])]
    result = run_ct(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cpm"] == pytest.approx(cpm)
    for key, value in fields.items():
        assert report[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert report["cpm_ci95"] is None
    if name == "series not in the evaluated set":
        assert "ignored 2 finding(s) on 1 series not in the evaluated set" in result.stderr
        assert report["findings"]["outside_evaluated_set"] == 2
    else:
        assert "not in the evaluated set" not in result.stderr


def test_json_has_the_promised_keys_and_a_reproducible_interval(tmp_path):
    pred = _csv(tmp_path / "pred.csv", PRED_HEADER, [(A, 0, 0, 0, 0.9), (B, 50, 0, 0, 0.5), (C, 0, 0, 0, 0.4)])
    annotations = _csv(tmp_path / "a.csv", ANNOT_HEADER, [(A, 0, 0, 0, 10), (B, 0, 0, 0, 4), (C, 0, 0, 0, 12)])
    args = ["evaluate", pred, "--annotations", annotations, "--json", "--bootstrap", "200", "--seed", "5", "--by-size"]
    first, second = run_ct(*args), run_ct(*args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert json.loads(second.stdout) == report
    assert list(report["sensitivity_at_fp"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]
    assert (report["n_scans"], report["n_nodules"], report["n_findings"]) == (3, 3, 3)
    # (0, 1/3), (1/3, 1/3), (1/3, 2/3): 1/3 at 1/8 and 1/4, 2/3 from 1/2 on
    assert report["cpm"] == pytest.approx((2 / 3 + 5 * 2 / 3) / 7)
    lo, hi = report["cpm_ci95"]
    assert 0 <= lo <= report["cpm"] <= hi <= 1
    assert set(report["by_size"]) == {"<5mm", "5-10mm", ">10mm"}
    assert report["by_size"]["<5mm"]["n_nodules"] == 1 and report["by_size"]["<5mm"]["cpm"] == 0.0
    assert report["bootstrap"] == {"samples": 200, "seed": 5}


def test_table_output_and_plot(tmp_path):
    pred = _csv(tmp_path / "pred.csv", PRED_HEADER, [(A, 0, 0, 0, 0.9), (A, 50, 0, 0, 0.8), (B, 0, 0, 0, 0.7)])
    annotations = _csv(tmp_path / "a.csv", ANNOT_HEADER, [(A, 0, 0, 0, 10), (B, 0, 0, 0, 4)])
    plot = tmp_path / "out" / "froc.png"
    result = run_ct("evaluate", pred, "--annotations", annotations, "--bootstrap", "50", "--by-size", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "CPM" in result.stdout and "2 scans, 2 nodules (2 detected)" in result.stdout
    assert "1.000" in result.stdout  # CPM of all nodules: (0, .5), (.5, .5), (.5, 1)... sens 1 from 1/2 on
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(plot.parent.glob(".*.tmp"))


def test_help_shows_an_example():
    result = run_ct("evaluate", "--help")
    assert result.exit_code == 0
    assert "Example: ct evaluate predictions.csv --annotations annotations.csv" in result.stdout


BAD_INPUT = {
    # name: (predictions text, annotations text, series-file text or None, expected message parts)
    "probability not a number": (
        f"{PRED_HEADER}\n{A},1,2,3,0.5\n{A},1,2,3,abc\n",
        None,
        None,
        ["pred.csv:3", "probability", "'abc'"],
    ),
    "probability nan": (f"{PRED_HEADER}\n{A},1,2,3,nan\n", None, None, ["pred.csv:2", "probability"]),
    "row too short": (f"{PRED_HEADER}\n{A},1,2,3,0.5\n{A},1,2\n", None, None, ["pred.csv:3"]),
    "row too long": (f"{PRED_HEADER}\n{A},1,2,3,0.5\n{A},1,2,3,0.5,9\n", None, None, ["pred.csv", "line 3"]),
    "findings only on other scans": (
        f"{PRED_HEADER}\n{C},1,2,3,0.5\n{C},4,5,6,0.4\n",
        None,
        None,
        [f"none of the 2 findings is on an evaluated scan (e.g. {C} is not among the 1 evaluated, such as {A})"],
    ),
    "empty series id": (f"{PRED_HEADER}\n,1,2,3,0.5\n", None, None, ["pred.csv:2"]),
    "missing column": (f"seriesuid,coordX,coordY,coordZ\n{A},1,2,3\n", None, None, ["pred.csv", "probability"]),
    "empty file": ("", None, None, ["pred.csv", "empty"]),
    "annotation without a size": (
        f"{PRED_HEADER}\n",
        f"{ANNOT_HEADER}\n{A},0,0,0,5\n{A},0,0,0,0\n",
        None,
        ["annotations.csv:3", "diameter_mm"],
    ),
    "no nodule on the evaluated scans": (f"{PRED_HEADER}\n", None, f"{C}\n", ["sensitivity is undefined"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_exits_2_naming_file_and_line(tmp_path, name):
    predictions, annotations, series, parts = BAD_INPUT[name]
    (tmp_path / "pred.csv").write_text(predictions)
    (tmp_path / "annotations.csv").write_text(annotations or f"{ANNOT_HEADER}\n{A},0,0,0,10\n")
    args = ["evaluate", tmp_path / "pred.csv", "--annotations", tmp_path / "annotations.csv", "--bootstrap", "0"]
    if series is not None:
        (tmp_path / "seriesuids.csv").write_text(series)
        args += ["--series-file", tmp_path / "seriesuids.csv"]
    result = run_ct(*args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and len(message.splitlines()) == 1, message
    for part in parts:
        assert part in message


def test_missing_predictions_file_is_a_usage_error(tmp_path):
    annotations = _csv(tmp_path / "a.csv", ANNOT_HEADER, [(A, 0, 0, 0, 10)])
    result = run_ct("evaluate", tmp_path / "nope.csv", "--annotations", annotations)
    assert result.exit_code == 2
    assert "nope.csv" in result.output


def test_ids_that_are_not_dicom_uids_are_evaluated(tmp_path):
    # LUNA16 derivatives and other data sets use other IDs (here with LUNA16-style leading zeros
    # and plain names); the evaluator only compares them.
    ids = ["1.3.6.1.4.1.14519.5.2.1.6279.6001.000000000000000000000000000000", "patient-07_ct"]
    annotations = _csv(tmp_path / "a.csv", ANNOT_HEADER, [(ids[0], 0, 0, 0, 10), (ids[1], 5, 5, 5, 8)])
    predictions = _csv(tmp_path / "p.csv", PRED_HEADER, [(ids[0], 1, 1, 1, 0.9), (ids[1], 50, 50, 50, 0.8)])
    result = run_ct("evaluate", predictions, "--annotations", annotations, "--bootstrap", "0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_scans"], report["n_nodules"], report["n_detected"], report["cpm"]) == (2, 2, 1, 0.5)
