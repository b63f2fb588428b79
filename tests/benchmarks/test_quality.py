"""`python -m benchmarks.quality --test-root`: an independent test set diagnosed and evaluated with the
recipe's models and reported beside the validation figures (#30)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import quality
from ct_pipeline.recipe import RecipeLayout, held_out_steps, held_out_summary
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import write_models
from tests.helpers.training_data import write_training_luna


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    return (
        write_training_luna(root / "train"),
        write_training_luna(root / "test", seed=1),
        write_models(root / "models", 0.8, 0.3),
    )


def _runner(models: dict[str, Path]):
    """The recipe's commands in this process; training copies hand-set models instead (seconds, not minutes)."""

    def run(argv) -> int:
        if argv[0] in ("train-seg", "train-cls"):
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            kind = "mal" if "--malignancy" in argv else argv[0].removeprefix("train-")
            shutil.copy(models[kind], out / "best.ckpt")
            return 0
        result = run_ct(*argv)
        assert result.exit_code == 0, (argv, result.output)
        return 0

    return run


def test_the_held_out_steps_diagnose_every_test_series_with_the_trained_models(tmp_path):
    layout = RecipeLayout(tmp_path / "data", tmp_path / "cache", tmp_path / "out")
    diagnose, evaluate = held_out_steps(layout, tmp_path / "test")
    assert diagnose.name == "test-diagnose" and evaluate.name == "test-evaluate"
    argv = diagnose.argv
    assert argv[argv.index("--data-root") + 1] == str(tmp_path / "test")
    assert argv[argv.index("--cls-model") + 1] == str(tmp_path / "out" / "runs" / "cls" / "best.ckpt")
    # its own cache: a test set's series UIDs may repeat the training data's
    assert argv[argv.index("--cache-dir") + 1] == str(tmp_path / "out" / "test" / "cache")
    assert evaluate.argv[evaluate.argv.index("--annotations") + 1] == str(tmp_path / "test" / "annotations.csv")


def test_a_test_block_beside_the_validation_figures(data, tmp_path, monkeypatch, capsys):
    train, test, models = data
    monkeypatch.setattr(quality, "_run_to_stderr", _runner(models))
    out = tmp_path / "q"
    code = quality.main(
        [
            "--data-root",
            str(train),
            "--out",
            str(out),
            "--recipe",
            "tiny",
            "--test-root",
            str(test),
            "--bootstrap",
            "20",
        ]
    )
    assert code == 0
    summary = json.loads((out / "quality.json").read_text())
    assert json.loads(capsys.readouterr().out) == summary
    validation, held_out = summary["detection"], summary["test"]
    assert validation["scans"] == 2 and held_out["scans"] == 6  # every 4th of 6 series; all 6 of the test set
    assert held_out["nodules"] == 18 and held_out["data_root"] == str(test)
    assert set(held_out) >= {"cpm", "cpm_ci95", "sensitivity_at_fp_per_scan", "by_size", "candidate_recall"}
    assert held_out["candidate_recall"]["nodules"] == 18 and held_out["candidate_recall"]["found"] == 17
    # the constant classifier ranks every candidate alike: the CPM is the share found, 17 of 18
    assert held_out["cpm"] == pytest.approx(17 / 18, abs=1e-9)
    assert held_out == held_out_summary(RecipeLayout(train, out / "cache", out), test, bootstrap_samples=20)


@pytest.mark.parametrize(
    ("test_root", "message"),
    [
        ("missing", "has no annotations.csv; give a LUNA16-layout folder"),
        ("train", "is the training data; give an independent folder"),
    ],
)
def test_a_bad_test_root_is_refused_before_anything_runs(data, tmp_path, capsys, test_root, message):
    train = data[0]
    root = train if test_root == "train" else tmp_path / "missing"
    assert quality.main(["--data-root", str(train), "--out", str(tmp_path / "q"), "--test-root", str(root)]) == 2
    assert capsys.readouterr().err == f"error: --test-root {root} {message}\n"
    assert not (tmp_path / "q").exists()


def test_crop_spacing_auto_reaches_the_nodule_classifier_and_the_json(data, tmp_path, monkeypatch, capsys):
    train, _, models = data
    commands = []
    runner = _runner(models)

    def recording(argv) -> int:
        commands.append(list(argv))
        return runner(argv)

    monkeypatch.setattr(quality, "_run_to_stderr", recording)
    out = tmp_path / "q"
    assert (
        quality.main(["--data-root", str(train), "--out", str(out), "--val-stride", "3", "--crop-spacing", "auto"]) == 0
    )
    nodule = next(argv for argv in commands if argv[0] == "train-cls" and "--malignancy" not in argv)
    malignancy = next(argv for argv in commands if "--malignancy" in argv)
    assert nodule[nodule.index("--crop-spacing") + 1] == "auto"
    assert "--crop-spacing" not in malignancy  # the fine-tune takes its source's
    assert json.loads((out / "quality.json").read_text())["crop_spacing"] == "auto"


def test_a_bad_crop_spacing_is_refused_before_anything_runs(data, tmp_path, capsys):
    out = tmp_path / "q"
    assert quality.main(["--data-root", str(data[0]), "--out", str(out), "--crop-spacing", "1,2"]) == 2
    assert capsys.readouterr().err == (
        "error: --crop-spacing 1,2: expected native, auto or 3 spacings Z,Y,X from 0.1 to 20 mm, e.g. 1.5,0.7,0.7\n"
    )
    assert not out.exists()
