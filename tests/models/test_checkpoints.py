"""Project checkpoints: round trip, plain data only, and one-line errors for bad files."""

import dataclasses
import enum
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ct_pipeline.errors import BadCheckpointError
from ct_pipeline.models import (
    ClassifierConfig,
    LunaClassifier,
    SegmentationUNet,
    UNetConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from ct_pipeline.models.checkpoints import load_state_checked, to_plain_data


class _Mode(enum.Enum):
    FAST = "fast"


@dataclasses.dataclass(frozen=True)
class _TrainConfig:
    lr: float = 1e-3
    crop: tuple[int, int] = (32, 48)
    out: Path = Path("runs/x")
    mode: _Mode = _Mode.FAST


def _small_unet():
    return SegmentationUNet(UNetConfig(in_channels=3, depth=2, wf=2))


def test_round_trip_keeps_weights_metadata_and_outputs(tmp_path):
    torch.manual_seed(1)
    model = _small_unet()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 16, 16)).mean().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "sub" / "seg.ckpt",
        model,
        kind="seg",
        optimizer_state=optimizer.state_dict(),
        epoch=3,
        samples_seen=600,
        config=_TrainConfig(),
        metrics={"loss": np.float32(0.25), "recall": torch.tensor(0.5), "epoch_seconds": 12},
    )
    assert [p.name for p in path.parent.iterdir()] == ["seg.ckpt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # plain data only: the strict loader accepts it
    assert raw["format"] == "ct-pipeline" and raw["format_version"] == 1
    assert raw["config"] == {"lr": 1e-3, "crop": [32, 48], "out": "runs/x", "mode": "fast"}

    checkpoint = load_checkpoint(path, expected_kind="seg")
    assert (checkpoint.kind, checkpoint.arch) == ("seg", "unet-wrapper")
    assert (checkpoint.epoch, checkpoint.samples_seen) == (3, 600)
    assert checkpoint.metrics == {"loss": 0.25, "recall": 0.5, "epoch_seconds": 12}
    assert checkpoint.model_config == {**dataclasses.asdict(UNetConfig(in_channels=3, depth=2, wf=2))}
    assert checkpoint.optimizer_state["state"][0]["step"] == 1
    rebuilt = build_model(checkpoint)
    assert not rebuilt.training
    batch = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(rebuilt(batch), model.eval()(batch))


def test_classifier_checkpoint_keeps_its_crop_shape(tmp_path):
    model = LunaClassifier(ClassifierConfig(crop_shape_irc=(16, 32, 32)))
    path = save_checkpoint(tmp_path / "mal.ckpt", model, kind="mal")
    rebuilt = build_model(load_checkpoint(path, expected_kind="mal"))
    assert rebuilt.config == ClassifierConfig(crop_shape_irc=(16, 32, 32))
    assert rebuilt.head_linear.in_features == 64 * 1 * 2 * 2


def test_channels_last_and_wrapped_models_save_plain_weights(tmp_path):
    model = _small_unet().to(memory_format=torch.channels_last)
    wrapped = torch.nn.DataParallel(model)  # like DDP: parameters live under .module
    path = save_checkpoint(tmp_path / "seg.ckpt", wrapped, kind="seg")
    state = load_checkpoint(path).model_state
    assert not any(name.startswith("module.") for name in state)
    assert all(tensor.is_contiguous() for tensor in state.values())


def test_save_refuses_wrong_kind_and_unplain_config(tmp_path):
    with pytest.raises(ValueError, match="needs a 'luna-classifier' model"):
        save_checkpoint(tmp_path / "x.ckpt", _small_unet(), kind="cls")
    with pytest.raises(TypeError, match="cannot store a object"):
        save_checkpoint(tmp_path / "x.ckpt", _small_unet(), kind="seg", config={"bad": object()})
    assert not (tmp_path / "x.ckpt").exists()


def test_to_plain_data_converts_nested_values():
    assert to_plain_data({1: (np.int64(2), Path("a")), "x": [_Mode.FAST, None, True]}) == {
        "1": [2, "a"],
        "x": ["fast", None, True],
    }


def test_shape_mismatch_names_the_first_key_and_both_shapes():
    small, big = _small_unet(), SegmentationUNet(UNetConfig(in_channels=3, depth=2, wf=3))
    with pytest.raises(BadCheckpointError) as info:
        load_state_checked(small, big.state_dict(), "big.ckpt")
    message = str(info.value)
    assert message.startswith(
        "big.ckpt does not fit the unet-wrapper model its configuration describes: "
        "unet.down_path.0.block.0.weight has shape (8, 3, 3, 3) in the file but (4, 3, 3, 3) in the model"
    )
    assert "more mismatches" in message and "\n" not in message


def test_missing_and_extra_keys_are_named():
    model = _small_unet()
    state = dict(model.state_dict())
    del state["unet.last.bias"]
    with pytest.raises(BadCheckpointError, match=r"unet\.last\.bias is missing from the file;"):
        load_state_checked(model, state, "f.ckpt")
    state = {**model.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(BadCheckpointError, match=r"the file has extra\.weight, which the model does not;"):
        load_state_checked(model, state, "f.ckpt")


def _payload(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(format_version=2), "has checkpoint format_version 2 but this ct reads up to 1; upgrade ct"),
        (dict(epoch="3"), "field 'epoch' is missing or has the wrong type (str)"),
        (dict(kind="xyz"), "has kind 'xyz' with arch 'unet-wrapper', which this ct does not know"),
        (dict(kind="cls"), "has kind 'cls' with arch 'unet-wrapper', which this ct does not know"),
    ],
)
def test_damaged_fields_are_refused(tmp_path, changes, message):
    path = _payload(save_checkpoint(tmp_path / "seg.ckpt", _small_unet(), kind="seg"), **changes)
    with pytest.raises(BadCheckpointError) as info:
        load_checkpoint(path)
    assert message in str(info.value)


def test_invalid_model_config_is_a_bad_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "seg.ckpt", _small_unet(), kind="seg")
    _payload(path, model_config={"in_channels": 3, "depth": 2, "wf": 2, "up_mode": "nearest"})
    with pytest.raises(BadCheckpointError, match="has an invalid model_config"):
        build_model(load_checkpoint(path))


class _WritesMarker:
    """Unpickling this runs ``Path(marker).touch()``: proof of code execution if the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_zip_format_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "ct-pipeline", "model_state": _WritesMarker(marker)}, tmp_path / "evil.ckpt")
    assert zipfile.is_zipfile(tmp_path / "evil.ckpt")
    refused = r"holds pickled Python code \([\w.]+\) that would run on loading, so it is refused for safety"
    with pytest.raises(BadCheckpointError, match=refused):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_WritesMarker(marker)))  # the payload is real: unpickling runs it
    assert marker.exists()
