"""Each LUNA16 table is checked once, the same way by every command that reads it (issue #26).

Training accepted an annotated diameter of -7 that `ct evaluate` refused; a table listing each
nodule twice made `ct evaluate` count 16 nodules instead of 8; probabilities outside [0, 1] in a
findings file passed without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ct_pipeline.evaluation.tables import ANNOTATION_HEADER as ANNOT_HEADER
from ct_pipeline.evaluation.tables import PREDICTION_HEADER as PRED_HEADER
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.training_data import write_training_luna

UIDS = [f"1.2.3.{k}" for k in range(1, 5)]
# Eight nodules on four scans, 10 mm each, 100 mm apart.
NODULES = [(uid, 100.0 * k, 0.0, 0.0, 10.0) for uid in UIDS for k in range(2)]


def _csv(path: Path, header: str, rows) -> Path:
    path.write_text("\n".join([header, *(",".join(str(v) for v in row) for row in rows)]) + "\n")
    return path


def _lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def _findings(tmp_path: Path, probabilities=(0.9, 0.8, 0.7, 0.6)) -> Path:
    """A hit on the first nodule of each scan, and one false positive on the first scan."""
    rows = [(uid, 0.0, 0.0, 0.0, p) for uid, p in zip(UIDS, probabilities)] + [(UIDS[0], 50.0, 0.0, 0.0, 0.5)]
    return _csv(tmp_path / "pred.csv", PRED_HEADER, rows)


def test_evaluate_counts_each_nodule_once_when_the_table_lists_it_twice(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    pred = _findings(folder)
    once = _csv(folder / "once.csv", ANNOT_HEADER, NODULES)
    twice = _csv(folder / "twice.csv", ANNOT_HEADER, NODULES + NODULES)  # lines 10-17 repeat lines 2-9
    before = tree_digest(folder)
    reference = run_ct("evaluate", pred, "--annotations", once, "--json", "--bootstrap", 0)
    result = run_ct("evaluate", pred, "--annotations", twice, "--json", "--bootstrap", 0)
    assert reference.exit_code == 0 and result.exit_code == 0, result.output
    assert _lines(result.stderr, "WARNING") == [
        f"WARNING: {twice}: 8 duplicate rows dropped (line 10 repeats line 2): each nodule counts once"
    ]
    assert _lines(reference.stderr, "WARNING") == []
    report = json.loads(result.stdout)
    assert (report["n_nodules"], report["n_detected"]) == (8, 4)
    assert report == json.loads(reference.stdout)
    assert tree_digest(folder) == before


def test_evaluate_warns_once_about_probabilities_outside_0_1_and_ranks_them_as_given(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    annotations = _csv(folder / "annotations.csv", ANNOT_HEADER, NODULES)
    pred = _findings(folder, probabilities=(0.9, 0.8, 0.7, 0.6))
    reference = run_ct("evaluate", pred, "--annotations", annotations, "--json", "--bootstrap", 0)
    scores = _findings(tmp_path, probabilities=(9.0, 8.0, 7.0, -6.0))  # the same order; the FP's 0.5 in between
    before = tree_digest(folder)
    result = run_ct("evaluate", scores, "--annotations", annotations, "--json", "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    assert _lines(result.stderr, "WARNING") == [
        f"WARNING: {scores}: 4 of 5 probabilities are outside [0, 1] (line 2: 9.0); they are used as scores (the FROC "
        "only ranks them), but check that the column holds the findings' probabilities"
    ]
    assert _lines(reference.stderr, "WARNING") == []
    ranked, given = json.loads(result.stdout), json.loads(reference.stdout)
    assert ranked["n_detected"] == given["n_detected"] == 4
    assert ranked["n_false_positives"] == given["n_false_positives"] == 1
    assert tree_digest(folder) == before


def _negative_diameter(root: Path) -> tuple[Path, int]:
    """Set the diameter of the third annotation (line 4) to -7; returns the file and the line."""
    path = root / "annotations.csv"
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join([*fields[:4], "-7"])
    path.write_text("\n".join(lines) + "\n")
    return path, 4


@pytest.mark.parametrize("command", ["evaluate", "prepcache", "train-cls", "train-seg", "hard-negatives"])
def test_every_command_refuses_a_negative_annotated_diameter_with_the_same_line(tmp_path, command):
    root = write_training_luna(tmp_path / "luna", n_series=2, nodules_per_series=2, negatives_per_series=2)
    annotations, line = _negative_diameter(root)
    out = tmp_path / "out"
    models = write_models(tmp_path / "models")
    common = ["--data-root", root]
    train = [
        "--out",
        out / "run",
        "--epochs",
        1,
        "--epoch-size",
        4,
        "--batch-size",
        4,
        "--val-stride",
        2,
        "--workers",
        0,
        "--device",
        "cpu",
    ]
    args = {
        "evaluate": ["evaluate", _findings(tmp_path), "--annotations", annotations, "--bootstrap", 0],
        "prepcache": ["prepcache", *common],
        "train-cls": ["train-cls", *common, *train],
        "train-seg": ["train-seg", *common, *train],
        "hard-negatives": [
            "hard-negatives",
            *common,
            "--seg-model",
            models["seg"],
            "--out",
            out / "hard.csv",
            "--val-stride",
            2,
        ],
    }[command]
    before = tree_digest(root, tmp_path / "models")
    result = run_ct(*args)
    assert result.exit_code == 2, result.output
    assert _lines(result.stderr, ("error", "internal error")) == [
        f"error: {annotations}:{line}: diameter_mm = -7 is not a positive size in mm; an annotated nodule needs its "
        "diameter (only annotations_excluded.csv may use -1)"
    ]
    assert tree_digest(root, tmp_path / "models") == before
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} if out.exists() else set()
    assert written <= {"run/logs/rank-0.log", "run/.ct-run.lock"}  # its log says why it ended, its lock; no checkpoint


def test_the_malignancy_and_candidate_tables_get_the_same_checks(tmp_path, caplog):
    from ct_pipeline.errors import BadDataError
    from ct_pipeline.evaluation.diagnosed import nodule_annotations
    from ct_pipeline.luna16 import read_candidates

    root = write_training_luna(tmp_path / "luna", n_series=2, nodules_per_series=2, negatives_per_series=2)
    malignancy = root / "annotations_with_malignancy.csv"
    rows = malignancy.read_text().splitlines()
    malignancy.write_text("\n".join([*rows, *rows[1:]]) + "\n")  # every nodule twice
    candidates = root / "candidates.csv"
    candidates.write_text(candidates.read_text() + candidates.read_text().splitlines()[-1] + "\n")
    with caplog.at_level("WARNING"):
        nodules = nodule_annotations(malignancy, [])  # what ct diagnose --evaluate counts
        table = read_candidates(candidates)
    assert len(nodules) == 4 and len(table) == 8
    assert [r.getMessage() for r in caplog.records] == [
        f"{malignancy}: 4 duplicate rows dropped (line 6 repeats line 2): each nodule counts once",
        f"{candidates}: 1 duplicate row dropped (line 10 repeats line 9): each candidate counts once",
    ]
    fields = rows[2].split(",")
    malignancy.write_text("\n".join([rows[0], rows[1], ",".join([*fields[:4], "0", fields[5]])]) + "\n")
    with pytest.raises(BadDataError, match=rf"^{malignancy}:3: diameter_mm = 0 is not a positive size in mm; "):
        nodule_annotations(malignancy, [])
