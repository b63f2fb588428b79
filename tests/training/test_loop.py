"""The training loop end to end on tiny data: checkpoints, TensorBoard, console, fine-tuning, CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from ct_pipeline.errors import BadCheckpointError, BadInputError
from ct_pipeline.models import ClassifierConfig, LunaClassifier, SegmentationUNet, load_checkpoint, save_checkpoint
from ct_pipeline.training import MalignancyTraining, TrainConfig, train
from tests.helpers.cli_process import run_ct
from tests.helpers.training_data import write_training_luna

TINY = {"epoch_size": 16, "batch_size": 8, "val_stride": 3, "workers": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_training_luna(tmp_path_factory.mktemp("luna"))


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(
        str(folder), size_guidance={"tensors": 0, "histograms": 0, "images": 0, "scalars": 0}
    )
    accumulator.Reload()
    return accumulator


@pytest.mark.slow
def test_train_cls_learns_and_writes_checkpoints_and_logs(data_root, tmp_path):
    out = io.StringIO()
    config = TrainConfig.for_task(
        "cls", data_roots=(data_root,), out_dir=tmp_path / "run", epochs=3, **{**TINY, "epoch_size": 32}
    )
    result = train(config, log_out=out)

    assert (result.epochs, result.samples_seen) == (3, 96)
    # epoch lines only: a slow epoch (a loaded machine) also prints plain progress lines, "epoch 1 train 16/32 ..."
    lines = [line for line in out.getvalue().splitlines() if re.match(r"epoch \d+/\d+ \|", line)]
    assert [line.split(" |")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "val loss" in lines[-1] and "roc_auc" in lines[-1] and "[tp " in lines[-1]
    # an easy problem (bright spheres vs background): the loop must actually learn it
    assert result.best_value >= 0.9
    assert result.metrics["train"]["loss"] < 0.69

    last = load_checkpoint(result.last_checkpoint, "cls")
    assert (last.epoch, last.samples_seen, last.config["task"], last.config["epochs"]) == (3, 96, "cls", 3)
    assert set(last.optimizer_state) >= {"optimizer", "best_value", "best_epoch"}
    assert last.metrics["val"]["roc_auc"] == pytest.approx(result.metrics["val"]["roc_auc"])
    best = load_checkpoint(result.best_checkpoint, "cls")
    assert best.epoch == result.best_epoch and best.metrics["val"]["roc_auc"] == pytest.approx(result.best_value)

    val_events = _events(tmp_path / "run" / "tensorboard" / "val")
    assert {"roc_auc", "f1", "precision", "recall", "loss", "tp", "fn"} <= set(val_events.Tags()["scalars"])
    assert [e.step for e in val_events.Scalars("roc_auc")] == [32, 64, 96]  # step = samples seen
    assert {"probability/label_negative", "probability/label_positive"} <= set(val_events.Tags()["histograms"])
    assert "pr" in val_events.Tags()["tensors"]  # the PR curve
    assert "samples_per_s" in _events(tmp_path / "run" / "tensorboard" / "train").Tags()["scalars"]


def test_train_seg_reports_pixel_and_nodule_metrics_and_images(data_root, tmp_path):
    config = TrainConfig.for_task("seg", data_roots=(data_root,), out_dir=tmp_path / "seg", epochs=1, **TINY)
    result = train(config, log_out=io.StringIO())
    val = result.metrics["val"]
    assert set(val) >= {"loss", "precision", "recall", "dice", "nodule_recall", "nodule_recall_4mm"}
    assert val["nodules"] == 6  # 2 validation series (val_stride 3 of 6) x 3 nodules
    # One 16-sample epoch teaches the U-Net little (seeds 1-4 mark nearly every pixel: dice 0.022-0.026;
    # seed 0, this run, 0.064 on one CPU), so a learning floor here would be chance. Instead: the 23
    # validation slices hold the data's 1170 nodule pixels, dice follows from the counts, and a network
    # that marks nothing (or NaN) fails the floor.
    assert val["tp"] + val["fn"] == 1170 and val["n"] == 23
    assert val["dice"] == pytest.approx(2 * val["tp"] / (2 * val["tp"] + val["fp"] + val["fn"])) and val["dice"] >= 0.01
    checkpoint = load_checkpoint(result.last_checkpoint, "seg")
    assert checkpoint.metrics["val"]["dice"] == pytest.approx(val["dice"])
    images = _events(tmp_path / "seg" / "tensorboard" / "val").Tags()["images"]
    assert "example_0" in images


@pytest.mark.parametrize("depth, trained", [(1, {"head_linear"}), (2, {"head_linear", "block4"})])
def test_malignancy_finetune_trains_only_the_last_blocks(data_root, tmp_path, depth, trained):
    torch.manual_seed(1)
    source = save_checkpoint(tmp_path / "nodule.ckpt", LunaClassifier(), kind="cls")
    config = TrainConfig.for_task(
        "mal",
        data_roots=(data_root,),
        out_dir=tmp_path / "mal",
        epochs=1,
        malignancy=MalignancyTraining(finetune=source, finetune_depth=depth),
        **TINY,
    )
    result = train(config, log_out=io.StringIO())
    before = load_checkpoint(source).model_state
    after = load_checkpoint(result.last_checkpoint, "mal").model_state
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == trained  # frozen blocks keep weights and BatchNorm statistics
    val = result.metrics["val"]  # the size-only yardstick comes with every validation
    # training_data.py draws the malignant nodules 10 mm wide and the benign 5 mm: size alone separates them
    assert val["size_auc"] == 1.0 and val["size_threshold_mm"] == 10.0


def test_a_finetune_keeps_the_shape_of_its_source(data_root, tmp_path):
    torch.manual_seed(2)
    source = save_checkpoint(
        tmp_path / "nodule.ckpt", LunaClassifier(ClassifierConfig(block_batchnorm=True, centre_head=True)), kind="cls"
    )
    config = TrainConfig.for_task(
        "mal",
        data_roots=(data_root,),
        out_dir=tmp_path / "mal",
        epochs=1,
        malignancy=MalignancyTraining(finetune=source, finetune_depth=1),
        **TINY,
    )
    result = train(config, log_out=io.StringIO())
    after = load_checkpoint(result.last_checkpoint, "mal")
    assert after.model_config["block_batchnorm"] is True and after.model_config["centre_head"] is True
    before = load_checkpoint(source).model_state
    assert torch.equal(after.model_state["block2.bn1.running_mean"], before["block2.bn1.running_mean"])  # frozen


def test_finetune_from_the_wrong_kind_of_checkpoint_is_refused(data_root, tmp_path):
    seg = save_checkpoint(tmp_path / "seg.ckpt", SegmentationUNet(), kind="seg")
    config = TrainConfig.for_task(
        "mal", data_roots=(data_root,), out_dir=tmp_path / "mal", malignancy=MalignancyTraining(finetune=seg), **TINY
    )
    with pytest.raises(
        BadCheckpointError, match=r"seg\.ckpt is a segmentation checkpoint .* --finetune needs a nodule classifier"
    ):
        train(config, log_out=io.StringIO())


def test_finetune_from_a_classifier_of_another_shape_is_refused(data_root, tmp_path):
    from ct_pipeline.models import ClassifierConfig

    narrow = save_checkpoint(tmp_path / "narrow.ckpt", LunaClassifier(ClassifierConfig(conv_channels=4)), kind="cls")
    config = TrainConfig.for_task(
        "mal", data_roots=(data_root,), out_dir=tmp_path / "mal", malignancy=MalignancyTraining(finetune=narrow), **TINY
    )
    with pytest.raises(
        BadCheckpointError, match=r"narrow\.ckpt has model_config .*'conv_channels': 4.* but training builds"
    ):
        train(config, log_out=io.StringIO())


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten_and_resume_needs_a_run(data_root, tmp_path):
    config = TrainConfig.for_task("cls", data_roots=(data_root,), out_dir=tmp_path / "run", epochs=1, **TINY)
    with pytest.raises(BadInputError, match=r"--resume: .*last\.ckpt does not exist"):
        train(config.replace(resume=True), log_out=io.StringIO())
    train(config, log_out=io.StringIO())
    with pytest.raises(BadInputError, match=r"already holds a run \(last\.ckpt\); add --resume"):
        train(config, log_out=io.StringIO())
    with pytest.raises(BadInputError, match=r"was trained with --lr 0\.001, but this run asks for 0\.01") as refused:
        train(config.replace(resume=True, epochs=2, lr=0.01), log_out=io.StringIO())
    assert "only --cache-dir, --data-root, --device, --epochs" in str(refused.value)  # options, not field names
    out = io.StringIO()
    result = train(config.replace(resume=True), log_out=out)  # already done: nothing to train
    assert result.epochs == 1 and "already trained 1 epochs" in out.getvalue()


@pytest.mark.slow
def test_cli_train_cls_runs(data_root, tmp_path):
    result = run_ct(
        "train-cls",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "cli"),
        "--epochs",
        "1",
        "--epoch-size",
        "16",
        "--batch-size",
        "8",
        "--val-stride",
        "3",
        "--workers",
        "0",
        "--no-augment",
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1/1 | train loss" in result.output
    assert f"last: {tmp_path / 'cli' / 'last.ckpt'} (1 epochs, 16 samples)" in result.output
    config = load_checkpoint(tmp_path / "cli" / "last.ckpt", "cls").config
    assert config["augmentation"] == {
        "mirror": False,
        "shift_fraction": 0.0,
        "scale_fraction": 0.0,
        "rotation_deg": 0.0,
        "noise_hu": 0.0,
        "noise_max_hu": 0.0,
        "hu_scale_fraction": 0.0,
        "hu_offset_hu": 0.0,
        "kernel_probability": 0.5,
        "blur_sigma_max_vox": 0.0,
        "sharpen_amount_max": 0.0,
    }
    assert config["batch_size"] == 8 and config["optimizer"] == "sgd" and config["lr"] == 0.001


@pytest.mark.parametrize(
    "args, message",
    [
        (["train-cls", "--epochs", "0"], r"--epochs 0: expected a whole number >= 1"),
        (
            ["train-cls", "--finetune", "{root}/candidates.csv"],
            r"--finetune .*candidates\.csv starts a malignancy model from a nodule model; add --malignancy",
        ),
        (["train-cls", "--malignancy", "--finetune", "{root}/nope.ckpt"], r"--finetune .*nope\.ckpt: no such file"),
        (["train-cls", "--device", "cpu", "--precision", "fp16"], r"--precision fp16 is for GPUs"),
        (["train-seg", "--aug-scale", "2"], r"augmentation scale_fraction = 2\.0: expected a number from 0\.0 to 0\.9"),
        (["train-seg", "--lr", "0"], r"--lr 0\.0: expected a number above 0\.0"),
        (["train-seg", "--resume"], r"--resume: .*last\.ckpt does not exist"),
        (["train-cls", "--crop-spacing", "1.5,0.7"], r"--crop-spacing 1\.5,0\.7: expected native, auto or 3 spacings"),
        (["train-cls", "--crop-spacing", "fine"], r"--crop-spacing fine: expected native, auto or 3 spacings Z,Y,X"),
        (["train-cls", "--crop-spacing", "1,0,1"], r"--crop-spacing 1,0,1: expected .* from 0\.1 to 20 mm"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(data_root, tmp_path, args, message):
    args = [a.replace("{root}", str(data_root)) for a in args]
    result = run_ct(*args, "--data-root", str(data_root), "--out", str(tmp_path / "x"), "--val-stride", "3")
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1
    assert re.search(message, error_lines[0]), error_lines[0]


def test_crop_spacing_auto_is_recorded_as_the_median_and_a_finetune_keeps_it(data_root, tmp_path):
    from ct_pipeline.training import ClassificationTraining

    nodule = TrainConfig.for_task(
        "cls",
        data_roots=(data_root,),
        out_dir=tmp_path / "cls",
        epochs=1,
        classification=ClassificationTraining(crop_spacing_mm="auto"),
        **TINY,
    )
    source = load_checkpoint(train(nodule, log_out=io.StringIO()).last_checkpoint, "cls")
    assert source.model_config["crop_spacing_mm"] == [1.5, 1.0, 1.0]  # training_data.py's 1.0 x 1.0 x 1.5 mm
    assert source.config["classification"]["crop_spacing_mm"] == "auto"  # what was asked, beside what it gave
    malignancy = TrainConfig.for_task(
        "mal",
        data_roots=(data_root,),
        out_dir=tmp_path / "mal",
        epochs=1,
        malignancy=MalignancyTraining(finetune=source.path),
        **TINY,
    )
    result = train(malignancy, log_out=io.StringIO())
    assert load_checkpoint(result.last_checkpoint, "mal").model_config["crop_spacing_mm"] == [1.5, 1.0, 1.0]
    other = malignancy.replace(
        out_dir=tmp_path / "mal2", classification=ClassificationTraining(crop_spacing_mm=(1.0, 1.0, 1.0))
    )
    with pytest.raises(BadInputError, match=r"^--crop-spacing 1,1,1: --finetune .* was trained on crops at 1\.5,1,1"):
        train(other, log_out=io.StringIO())


def test_a_resume_that_would_resolve_auto_to_another_spacing_is_refused(data_root, tmp_path, monkeypatch):
    import ct_pipeline.training.tasks as tasks
    from ct_pipeline.training import ClassificationTraining

    config = TrainConfig.for_task(
        "cls",
        data_roots=(data_root,),
        out_dir=tmp_path / "cls",
        epochs=1,
        classification=ClassificationTraining(crop_spacing_mm="auto"),
        **TINY,
    )
    train(config, log_out=io.StringIO())
    # --data-root may change on resume: other series, another median
    monkeypatch.setattr(tasks, "median_spacing_irc_mm", lambda catalog, uids: (2.0, 1.0, 1.0))
    with pytest.raises(
        BadInputError,
        match=r"^--resume: .*last\.ckpt holds a model with crop_spacing_mm \[1\.5, 1\.0, 1\.0\], but this",
    ):
        train(config.replace(epochs=2, resume=True), log_out=io.StringIO())
