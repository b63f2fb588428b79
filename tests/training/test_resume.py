"""A run stopped after epoch k and resumed ends with exactly the weights of the uninterrupted run."""

from __future__ import annotations

import io

import pytest
import torch

from ct_pipeline.errors import BadInputError
from ct_pipeline.models import load_checkpoint
from ct_pipeline.training import TrainConfig, train
from tests.helpers.training_data import write_training_luna


def _flatten(value, prefix=""):
    """(path, leaf) pairs of nested dicts/lists, for comparing optimizer states."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _flatten(value[key], f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            yield from _flatten(item, f"{prefix}/{k}")
    else:
        yield prefix, value


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cls", "seg"])
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path, task):
    root = write_training_luna(tmp_path / "luna")
    # augmentation on (the default) and a worker process: both must replay exactly
    options = {"data_roots": (root,), "epoch_size": 16, "batch_size": 8, "val_stride": 3, "workers": 1, "seed": 7}
    whole = train(TrainConfig.for_task(task, out_dir=tmp_path / "whole", epochs=2, **options), log_out=io.StringIO())
    first = TrainConfig.for_task(task, out_dir=tmp_path / "parts", epochs=1, **options)
    train(first, log_out=io.StringIO())
    after_epoch_1 = load_checkpoint(tmp_path / "parts" / "last.ckpt", task)
    resumed = train(first.replace(epochs=2, resume=True), log_out=io.StringIO())

    a = load_checkpoint(whole.last_checkpoint, task)
    b = load_checkpoint(resumed.last_checkpoint, task)
    assert (b.epoch, b.samples_seen) == (a.epoch, a.samples_seen) == (2, 32)
    assert a.model_state.keys() == b.model_state.keys()
    for name in a.model_state:
        assert torch.equal(a.model_state[name], b.model_state[name]), name
    a_opt, b_opt = dict(_flatten(a.optimizer_state)), dict(_flatten(b.optimizer_state))
    assert a_opt.keys() == b_opt.keys()
    for key, value in a_opt.items():
        same = torch.equal(value, b_opt[key]) if isinstance(value, torch.Tensor) else value == b_opt[key]
        assert same, key
    assert a.metrics == b.metrics
    # and epoch 2 did change the weights: the comparison is not between two idle models
    assert after_epoch_1.epoch == 1
    assert any(not torch.equal(after_epoch_1.model_state[n], b.model_state[n]) for n in b.model_state)


def _run_folder(tmp_path, config_data: dict):
    """``last.ckpt`` of a finished epoch whose checkpoint stores ``config_data`` as its config."""
    from ct_pipeline.models import LunaClassifier, save_checkpoint

    save_checkpoint(
        tmp_path / "run" / "last.ckpt",
        LunaClassifier(),
        kind="cls",
        optimizer_state={"optimizer": {}},
        epoch=1,
        config=config_data,
    )


def test_a_run_saved_before_the_config_had_sections_resumes_and_its_options_still_count(tmp_path):
    from ct_pipeline.models.checkpoints import to_plain_data
    from ct_pipeline.training import ClassificationTraining
    from ct_pipeline.training.config import flat_fields
    from ct_pipeline.training.state import open_resume_checkpoint

    config = TrainConfig.for_task("cls", data_roots=(tmp_path,), out_dir=tmp_path / "run", resume=True)
    # how checkpoints stored it before: every field flat, the loader processes called num_workers
    old = flat_fields(to_plain_data(config))
    old["num_workers"] = old.pop("workers")
    assert "balance_ratio" in old and "classification" not in old
    _run_folder(tmp_path, old)
    assert open_resume_checkpoint(config.replace(workers=3)).epoch == 1
    changed = config.replace(classification=ClassificationTraining(balance_ratio=2.0))
    with pytest.raises(
        BadInputError, match=r"^--resume: .* was trained with --balance-ratio 1\.0, but this run asks for 2\.0"
    ):
        open_resume_checkpoint(changed)


def test_a_sectioned_config_refuses_a_changed_section_option_by_its_option_name(tmp_path):
    from ct_pipeline.models.checkpoints import to_plain_data
    from ct_pipeline.training import SegmentationTraining
    from ct_pipeline.training.state import open_resume_checkpoint

    config = TrainConfig.for_task("cls", data_roots=(tmp_path,), out_dir=tmp_path / "run", resume=True)
    stored = to_plain_data(config)
    assert stored["segmentation"]["seg_threshold"] == 0.5  # checkpoints keep the sections
    _run_folder(tmp_path, stored)
    assert open_resume_checkpoint(config).epoch == 1
    with pytest.raises(BadInputError, match=r"was trained with --seg-threshold 0\.5, but this run asks for 0\.7"):
        open_resume_checkpoint(config.replace(segmentation=SegmentationTraining(seg_threshold=0.7)))


def test_a_checkpoint_from_before_own_candidates_resumes_as_own_share_0_and_a_share_counts(tmp_path):
    from ct_pipeline.models.checkpoints import to_plain_data
    from ct_pipeline.training import ClassificationTraining
    from ct_pipeline.training.state import open_resume_checkpoint

    config = TrainConfig.for_task("cls", data_roots=(tmp_path,), out_dir=tmp_path / "run", resume=True)
    older = to_plain_data(config)
    for name in ("own_candidates", "own_share", "own_positive_share"):  # what checkpoints held before #30 item 4
        del older["classification"][name]
    _run_folder(tmp_path, older)
    assert open_resume_checkpoint(config).epoch == 1
    own = ClassificationTraining(own_candidates=(tmp_path / "own.csv",), own_share=0.25)
    with pytest.raises(BadInputError, match=r"was trained with --own-candidates \[\], but this run asks for"):
        open_resume_checkpoint(config.replace(classification=own))


def test_a_run_saved_before_the_intensity_augmentation_resumes_with_it_off(tmp_path):
    import dataclasses

    from ct_pipeline.models.checkpoints import to_plain_data
    from ct_pipeline.training.state import open_resume_checkpoint

    config = TrainConfig.for_task("cls", data_roots=(tmp_path,), out_dir=tmp_path / "run", resume=True)
    stored = to_plain_data(config)
    new_fields = ("noise_max_hu", "hu_scale_fraction", "hu_offset_hu", "kernel_probability")
    new_fields += ("blur_sigma_max_vox", "sharpen_amount_max")
    stored["augmentation"] = {k: v for k, v in stored["augmentation"].items() if k not in new_fields}
    assert set(stored["augmentation"]) == {"mirror", "shift_fraction", "scale_fraction", "rotation_deg", "noise_hu"}
    _run_folder(tmp_path, stored)
    assert open_resume_checkpoint(config).epoch == 1
    robust = config.replace(augmentation=config.augmentation.scanner_robust())
    with pytest.raises(BadInputError, match=r"was trained with the --aug-\* options .*'hu_offset_hu': 0\.0"):
        open_resume_checkpoint(robust)
    assert dataclasses.asdict(robust.augmentation)["hu_offset_hu"] == 50.0
