"""Findings as files: result records round-trip, the LUNA16 CSV, safe file names, damaged files."""

from __future__ import annotations

import json

import pytest

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.diagnosis.result_files import (
    json_line,
    luna16_csv_text,
    merge_result_files,
    read_result_file,
    result_file_name,
    write_result_file,
)
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation import read_findings


def _result(uid: str = "1.2.3", n: int = 2) -> DiagnosisResult:
    findings = tuple(
        Finding((1.5 * k, -2.25, 300.125), (k, 2, 3), 4.0 + k, 0.9 - 0.1 * k, None if k else 0.25, 1 + k)
        for k in range(n)
    )
    return DiagnosisResult(
        uid, findings, {"load": 0.5, "segmentation": 2.0}, n + 3, (10, 20, 30), (0.7, 0.7, 2.5), "/data/x", 0.6
    )


def test_result_file_round_trip_and_json_line(tmp_path):
    result = _result()
    path = write_result_file(tmp_path, "1.2.3", result)
    assert path.name == "1.2.3.json"
    back = read_result_file(path)
    assert back == result
    record = json.loads(json_line(result))
    assert "\n" not in json_line(result)
    assert record["candidates"][0] == {
        "center_xyz": [0.0, -2.25, 300.125],
        "center_irc": [0, 2, 3],
        "diameter_mm": 4.0,
        "nodule_prob": 0.9,
        "malignancy_prob": 0.25,
        "n_merged": 1,
    }
    assert record["candidates"][1]["malignancy_prob"] is None
    assert record["timings_s"] == {"load": 0.5, "segmentation": 2.0}


def test_luna16_csv_has_one_row_per_candidate():
    text = luna16_csv_text([_result("1.2.3", 2), _result("1.2.4", 0), _result("1.2.5", 1)])
    lines = text.splitlines()
    assert lines[0] == "seriesuid,coordX,coordY,coordZ,probability"
    assert lines[1:] == [
        "1.2.3,0.000,-2.250,300.125,0.9",
        "1.2.3,1.500,-2.250,300.125,0.8",
        "1.2.5,0.000,-2.250,300.125,0.9",
    ]


@pytest.mark.parametrize("key", ["scan <b>", "../../etc/passwd", "a" * 300, "patient 1.nii"])
def test_file_names_are_safe_and_distinct(key):
    name = result_file_name(key)
    assert name.endswith(".json") and "/" not in name and " " not in name and "<" not in name and len(name) < 120
    assert result_file_name(key + "x") != name


def test_merge_gathers_results_and_refuses_damage(tmp_path):
    write_result_file(tmp_path, "1.2.4", _result("1.2.4", 1))
    write_result_file(tmp_path, "1.2.3", _result("1.2.3", 2))
    path, n_series, n_rows = merge_result_files(tmp_path)
    assert (path, n_series, n_rows) == (tmp_path / "findings.csv", 2, 3)
    assert list(read_findings(path).series_uid) == ["1.2.3", "1.2.3", "1.2.4"]
    (tmp_path / "1.2.9.json").write_text('{"series_uid": "1.2.9", "candidates": [{"center_xyz": [1, 2]}]}')
    with pytest.raises(BadDataError, match="1.2.9.json"):
        merge_result_files(tmp_path)
    (tmp_path / "1.2.9.json").write_text("{not json")
    with pytest.raises(BadDataError, match="not a readable result file"):
        merge_result_files(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="holds no ct diagnose result files"):
        merge_result_files(tmp_path / "empty")
