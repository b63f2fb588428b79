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


def test_tta_reaches_both_diagnose_steps_and_is_left_out_when_off(tmp_path):
    from ct_pipeline.recipe import RECIPES, recipe_steps

    layout = RecipeLayout(tmp_path / "data", tmp_path / "cache", tmp_path / "out")

    def diagnose_argvs(tta: int) -> list[tuple[str, ...]]:
        steps = recipe_steps(layout, RECIPES["tiny"], 4, tta=tta) + held_out_steps(layout, tmp_path / "test", tta=tta)
        return [step.argv for step in steps if step.argv[0] == "diagnose"]

    with_tta = diagnose_argvs(4)
    assert len(with_tta) == 2 and all(argv[argv.index("--tta") + 1] == "4" for argv in with_tta)
    assert not any("--tta" in argv for argv in diagnose_argvs(1))  # the documented commands stay as they were


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
            "--tta",
            "2",  # the constant classifier gives the same figures with any flips
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
    assert summary["tta"] == 2
    for results in (out / "findings", out / "test" / "findings"):
        recorded = {
            json.loads(p.read_text())["provenance"]["settings"]["classifier_flips"] for p in results.glob("*.json")
        }
        assert recorded == {2}


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


@pytest.mark.parametrize("value", ["-0.25", "1.5", "nan"])
def test_an_own_share_outside_zero_to_one_is_one_line_and_exit_2(value, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    code = quality.main(["--data-root", str(root), "--out", str(tmp_path / "out"), "--own-share", value])
    assert code == 2
    assert capsys.readouterr().err == f"error: --own-share {float(value)}: expected a fraction from 0 to 1\n"
    assert not (tmp_path / "out").exists()


def test_own_share_mines_the_own_candidates_and_trains_the_classifier_on_that_share(tmp_path, monkeypatch, capsys):
    from ct_pipeline.errors import CtError

    root = tmp_path / "data"
    root.mkdir()
    (root / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    ran = []

    def stop(steps, *args, **kwargs):
        ran.extend(steps)
        raise CtError("stopped before running")

    monkeypatch.setattr(quality, "run_steps", stop)
    assert quality.main(["--data-root", str(root), "--out", str(tmp_path / "out"), "--own-share", "0.25"]) == 2
    by_name = {step.name: step.argv for step in ran}
    assert by_name["own-candidates"][:2] == ("hard-negatives", "--with-positives")
    cls = by_name["train-cls"]
    assert cls[cls.index("--own-share") + 1] == "0.25"
    assert cls[cls.index("--own-candidates") + 1] == str(tmp_path / "out" / "runs" / "own_candidates.csv")
    ran.clear()
    assert quality.main(["--data-root", str(root), "--out", str(tmp_path / "out2")]) == 2
    assert "own-candidates" not in [step.name for step in ran]  # the recommended recipe's default: 0


def test_intensity_aug_trains_all_three_models_with_the_scanner_robust_augmentation(tmp_path, monkeypatch):
    """``--intensity-aug``: each rendered `ct train-*` command builds the recipe's config with
    ``scanner_robust()`` added, and nothing else changes."""
    import dataclasses

    import cli.train_cmd
    from ct_pipeline.recipe import RECIPES, recipe_configs, recipe_steps

    def parts(*given: str) -> str:
        return quality._arguments(["--data-root", "d", "--out", "o", *given]).intensity_aug

    assert (parts("--intensity-aug"), parts(), parts("--intensity-aug", "kernel")) == (
        "calibration,noise,kernel",
        "",
        "kernel",
    )
    layout = RecipeLayout(tmp_path / "data", tmp_path / "cache", tmp_path / "out")
    layout.data_root.mkdir()
    plain = RECIPES["recommended"]
    robust = dataclasses.replace(plain, intensity_aug=("calibration", "noise", "kernel"))
    before = recipe_configs(layout, plain, val_stride=4)
    built = []
    monkeypatch.setattr(cli.train_cmd, "_run", built.append)
    for step in recipe_steps(layout, robust, val_stride=4):
        if step.config is None:
            continue
        name = step.name.removeprefix("train-")
        assert step.config.augmentation == before[name].augmentation.scanner_robust()
        assert step.config.replace(augmentation=before[name].augmentation) == before[name]
        assert "--aug-hu-offset" in step.argv and step.argv[step.argv.index("--aug-hu-offset") + 1] == "50"
        result = run_ct(*step.argv)
        assert result.exit_code == 0, result.output
        assert built.pop() == step.config


def test_an_unknown_intensity_aug_part_is_refused_before_anything_runs(data, tmp_path, capsys):
    train, _, _ = data
    argv = ["--data-root", str(train), "--out", str(tmp_path / "q"), "--intensity-aug", "noise,contrast"]
    assert quality.main(argv) == 2
    assert "--intensity-aug 'contrast' is not one of calibration, noise, kernel" in capsys.readouterr().err
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
