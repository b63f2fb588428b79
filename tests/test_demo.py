"""`ct demo`: the recipe reuses what is there, and every step runs end to end on tiny data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ct_pipeline.demo import DEMO_SCALES, demo_steps, run_demo
from ct_pipeline.errors import CtError
from tests.helpers.cli_process import run_ct

TINY = DEMO_SCALES["tiny"]


def _in_process(argv) -> int:
    """Run a step through the CLI in this process (the demo's default starts a process per step)."""
    result = run_ct(*argv)
    if result.exit_code != 0:
        print(result.output)
    return result.exit_code


def test_a_fresh_demo_writes_data_and_trains_from_scratch(tmp_path):
    steps = demo_steps(tmp_path, TINY)
    assert [s.name for s in steps] == [
        "synth",
        "prepcache",
        "train-seg",
        "train-cls",
        "train-mal",
        "diagnose",
        "evaluate",
    ]
    assert not any("--resume" in s.argv for s in steps)
    mal = steps[4].argv
    assert mal[:3] == ("train-cls", "--malignancy", "--finetune")
    assert mal[3] == str(tmp_path / "runs" / "cls" / "best.ckpt")


def test_a_recipe_with_hard_negatives_mines_them_after_the_unet_and_trains_the_classifier_on_them(tmp_path):
    recipe = dataclasses.replace(TINY.recipe, hard_negatives=True)
    steps = demo_steps(tmp_path, dataclasses.replace(TINY, recipe=recipe))
    names = [s.name for s in steps]
    assert names.index("train-seg") < names.index("hard-negatives") < names.index("train-cls")
    mined = steps[names.index("hard-negatives")].argv
    hard_negatives = str(tmp_path / "runs" / "hard_negatives.csv")
    assert mined[mined.index("--out") + 1] == hard_negatives
    assert mined[mined.index("--seg-model") + 1] == str(tmp_path / "runs" / "seg" / "best.ckpt")
    cls = steps[names.index("train-cls")].argv
    assert cls[cls.index("--extra-candidates") + 1] == hard_negatives


def test_a_recipe_with_an_own_share_mines_labelled_candidates_and_draws_that_share_from_them(tmp_path):
    from ct_pipeline.recipe import RECIPES

    assert RECIPES["recommended"].own_share == 0.0  # until 0/25/50 % are measured
    assert "own-candidates" not in [s.name for s in demo_steps(tmp_path, TINY)]
    recipe = dataclasses.replace(TINY.recipe, own_share=0.25)
    steps = demo_steps(tmp_path, dataclasses.replace(TINY, recipe=recipe))
    names = [s.name for s in steps]
    assert names.index("train-seg") < names.index("own-candidates") < names.index("train-cls")
    mined = steps[names.index("own-candidates")].argv
    own = str(tmp_path / "runs" / "own_candidates.csv")
    assert mined[:2] == ("hard-negatives", "--with-positives") and mined[mined.index("--out") + 1] == own
    assert mined[mined.index("--seg-model") + 1] == str(tmp_path / "runs" / "seg" / "best.ckpt")
    cls = steps[names.index("train-cls")].argv
    assert cls[cls.index("--own-candidates") + 1] == own and cls[cls.index("--own-share") + 1] == "0.25"
    assert "--own-share" not in steps[names.index("train-mal")].argv
    (tmp_path / "runs" / "own_candidates.csv").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "runs" / "own_candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,class\n")
    again = [s.name for s in demo_steps(tmp_path, dataclasses.replace(TINY, recipe=recipe))]
    assert "own-candidates" not in again  # mined once, kept


def test_a_second_demo_reuses_the_data_and_resumes_the_runs(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,class\n")
    for name in ("seg", "cls"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "last.ckpt").write_bytes(b"")
    steps = {s.name: s.argv for s in demo_steps(tmp_path, TINY)}
    assert "synth" not in steps
    assert "--resume" in steps["train-seg"] and "--resume" in steps["train-cls"]
    assert "--resume" not in steps["train-mal"]  # that run never started


def test_a_failing_step_is_named(tmp_path):
    with pytest.raises(CtError, match=r"demo step `ct synth` failed with exit code 2"):
        run_demo(tmp_path, TINY, runner=lambda argv: 2, announce=lambda line: None)


@pytest.mark.slow
def test_demo_smoke_every_step_on_tiny_data_then_a_second_run_reuses_it(tmp_path):
    out = tmp_path / "demo"
    shown: list[str] = []
    summary = run_demo(out, TINY, runner=_in_process, announce=shown.append)
    assert [line.split()[2] for line in shown] == [
        "synth",
        "prepcache",
        "train-seg",
        "train-cls",
        "train-cls",
        "diagnose",
        "evaluate",
    ]
    assert (out / "report" / "index.html").is_file() and (out / "froc.png").is_file()
    assert json.loads((out / "summary.json").read_text()) == summary
    # The tiny scale checks the plumbing, not learning: measured, its CPM is 0.0 (no nodule found
    # at 8 false positives per scan) and the nodule classifier's AUC 0.64, near chance and free to
    # move with fp32 rounding on another CPU (learning's floor: tests/training/test_loop.py, val
    # AUC >= 0.9). What the data fixes is pinned, and CPM must be the mean of its seven sensitivities.
    detection = summary["detection"]
    assert (detection["scans"], detection["nodules"], summary["candidate_recall"]["nodules"]) == (2, 3, 3)
    assert detection["cpm"] == pytest.approx(sum(detection["sensitivity_at_fp_per_scan"].values()) / 7)
    assert 0.0 <= summary["nodule_classifier"]["roc_auc"] <= 1.0  # a number (NaN fails), not a floor
    assert summary["malignancy_classifier"]["size_only_auc"] == 1.0  # from the validation nodules' sizes and labels
    assert summary["segmentation"]["nodule_recall_4mm"] is not None
    checkpoints = sorted((out / "runs").glob("*/best.ckpt"))
    assert len(checkpoints) == 3
    before = {p: p.stat().st_mtime_ns for p in checkpoints}

    shown.clear()
    again = run_demo(out, TINY, runner=_in_process, announce=shown.append)
    assert not any(line.startswith("$ ct synth") for line in shown)
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before  # nothing retrained
    assert again["detection"] == summary["detection"]


def _configs_built_by(argv_lines, monkeypatch) -> list:
    """The TrainConfig each `ct train-*` command line builds (parsed by the CLI, not trained)."""
    import shlex

    import cli.train_cmd

    built = []
    monkeypatch.setattr(cli.train_cmd, "_run", built.append)
    for line in argv_lines:
        argv = shlex.split(line) if isinstance(line, str) else list(line)
        result = run_ct(*(argv[1:] if argv[0] == "ct" else argv))
        assert result.exit_code == 0, (line, result.output)
    return built


def test_the_recipes_command_lines_build_exactly_its_configs(tmp_path, monkeypatch):
    from ct_pipeline.recipe import RECIPES, RecipeLayout, recipe_steps

    (tmp_path / "data").mkdir()
    for name, recipe in RECIPES.items():
        layout = RecipeLayout(tmp_path / "data", tmp_path / "cache", tmp_path / name)
        steps = [step for step in recipe_steps(layout, recipe, val_stride=3, seed=5) if step.config is not None]
        assert [step.name for step in steps] == ["train-seg", "train-cls", "train-mal"]
        assert _configs_built_by([step.argv for step in steps], monkeypatch)[-3:] == [step.config for step in steps]


def test_the_readme_prints_the_recommended_recipe(tmp_path, monkeypatch):
    """README's synthetic-data block is the recipe `ct demo` and `benchmarks.quality` run: its
    `ct train-*` lines build exactly the recipe's configs, placed where the block puts them."""
    from pathlib import Path

    from ct_pipeline.recipe import RECIPES, RecipeLayout, recipe_configs

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("With synthetic data, in minutes on a CPU") :]
    block = block[block.index("```bash") : block.index("```", block.index("```bash") + 3)].replace("\\\n", " ")
    lines = [line for line in block.splitlines() if line.startswith("ct train")]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synth_data").mkdir()
    layout = RecipeLayout(data_root=(tmp_path / "synth_data").resolve(), cache_dir=None, out_dir=Path("."))
    expected = recipe_configs(layout, RECIPES["recommended"], val_stride=4)
    assert _configs_built_by(lines, monkeypatch) == [expected["seg"], expected["cls"], expected["mal"]]
