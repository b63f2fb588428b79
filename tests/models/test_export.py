"""``ct models export``: TorchScript and ONNX files with ct's metadata, run by diagnosis like checkpoints.

Hand-set tiny networks (tests/helpers/diagnosis_tiny.py) keep these fast; the book's weights on the real
CT are in tests/models/test_export_numeric.py.
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

from ct_pipeline import __version__
from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.networks import load_diagnosis_models
from ct_pipeline.diagnosis.pipeline import diagnose
from ct_pipeline.errors import BadCheckpointError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.fingerprint import sha256_of_file
from ct_pipeline.loading.mhd import write_mhd
from ct_pipeline.models import save_checkpoint
from ct_pipeline.models.export import ONNX_OPSET, export_model
from ct_pipeline.models.exported import ExportedModel, exported_format, load_exported, read_metadata
from ct_pipeline.volume import CtVolume
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import (
    NODULES_IRC,
    constant_classifier,
    phantom_chest,
    phantom_geometry,
    random_classifier,
    threshold_unet,
)

FAST = InferenceOptions(
    device="cpu", workers=1, precision="fp32"
)  # exported models run in fp32: compare like with like
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Checkpoints of a threshold U-Net, a random nodule classifier and a constant malignancy one,
    each exported in both formats: {("seg", "ckpt"): path, ("seg", "onnx"): path, ...}."""
    folder = tmp_path_factory.mktemp("export")
    networks = {"seg": threshold_unet(), "cls": random_classifier(seed=3), "mal": constant_classifier(0.3)}
    paths = {}
    for kind, network in networks.items():
        paths[kind, "ckpt"] = save_checkpoint(folder / f"{kind}.ckpt", network, kind=kind)
        for fmt, suffix in SUFFIX.items():
            paths[kind, fmt] = folder / f"{kind}{suffix}"
            export_model(paths[kind, "ckpt"], fmt, paths[kind, fmt])
    return paths


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_the_file_carries_cts_metadata(exports, fmt):
    seg, cls = read_metadata(exports["seg", fmt]), read_metadata(exports["cls", fmt])
    assert exported_format(exports["seg", fmt]) == fmt and exported_format(exports["seg", "ckpt"]) is None
    assert (seg.kind, seg.arch, seg.format) == ("seg", "unet-wrapper", fmt)
    assert seg.input_shape == [None, 7, None, None] and seg.output_names == ["probability"]
    assert cls.input_shape == [None, 1, 16, 16, 16] and cls.output_names == ["logits", "probability"]
    assert seg.hu_range == [-1000.0, 1000.0] and seg.spacing_mm is None
    assert seg.checkpoint_sha256 == sha256_of_file(exports["seg", "ckpt"]) and seg.checkpoint_name == "seg.ckpt"
    assert (seg.ct_version, seg.torch_version) == (__version__, torch.__version__)
    assert seg.opset == (ONNX_OPSET if fmt == "onnx" else None)
    assert read_metadata(exports["mal", fmt]).kind == "mal"


@pytest.mark.numeric  # also under the capped ISA: onnxruntime's and torch's kernels change with it
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_any_batch_size_and_slice_size_gives_the_checkpoints_outputs(exports, fmt):
    torch.manual_seed(0)
    unet, classifier = threshold_unet(), random_classifier(seed=3)
    seg = load_exported(exports["seg", fmt], "seg", option="--seg-model")
    cls = load_exported(exports["cls", fmt], "cls", option="--cls-model")
    assert isinstance(seg, ExportedModel) and seg.device.type == "cpu" and not seg.channels_last
    for batch, height, width in ((1, 64, 64), (3, 32, 96)):  # exported at (2, 7, 64, 64)
        slices = torch.rand(batch, 7, height, width) * 2000 - 1000
        with torch.inference_mode():
            expected = unet(slices)
        assert seg(slices).shape == (batch, 1, height, width)
        np.testing.assert_allclose(seg(slices).numpy(), expected.numpy(), rtol=0, atol=1e-5)
    for batch in (1, 5):
        crops = torch.rand(batch, 1, 16, 16, 16) * 2000 - 1000
        with torch.inference_mode():
            expected_logits, expected_probability = classifier(crops)
        logits, probability = cls(crops)
        np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=1e-5, atol=1e-5)  # logits ~100
        np.testing.assert_allclose(probability.numpy(), expected_probability.numpy(), rtol=0, atol=1e-6)
        assert probability.dtype == torch.float32 and abs(float(probability[0].sum()) - 1) < 1e-6


@pytest.mark.numeric
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "mixed"])
def test_diagnose_from_exported_files_finds_what_the_checkpoints_find(exports, fmt):
    volume = CtVolume(
        hu=phantom_chest(), geometry=phantom_geometry(), series_uid="1.2.3.4", source="phantom", format="test"
    )
    config = DiagnosisConfig(lung_margin_mm=8.0)
    reference = diagnose(
        volume,
        load_diagnosis_models(exports["seg", "ckpt"], exports["cls", "ckpt"], exports["mal", "ckpt"], FAST),
        config,
    )
    formats = (
        {"seg": "torchscript", "cls": "onnx", "mal": "ckpt"}
        if fmt == "mixed"
        else dict.fromkeys(("seg", "cls", "mal"), fmt)
    )
    models = load_diagnosis_models(*(exports[kind, formats[kind]] for kind in ("seg", "cls", "mal")), FAST)
    assert models.precision == {"seg": "fp32", "cls": "fp32", "mal": "fp32"}
    assert models.context_slices == 3 and models.crop_shape_irc == (16, 16, 16)
    result = diagnose(volume, models, config)
    assert sorted(f.center_irc for f in result.findings) == sorted(NODULES_IRC)
    assert [f.center_irc for f in result.findings] == [f.center_irc for f in reference.findings]
    for ours, theirs in zip(result.findings, reference.findings):
        assert ours.nodule_prob == pytest.approx(theirs.nodule_prob, abs=1e-5)
        assert ours.malignancy_prob == (
            None if theirs.malignancy_prob is None else pytest.approx(theirs.malignancy_prob, abs=1e-5)
        )
        assert ours.diameter_mm == theirs.diameter_mm


def test_provenance_names_the_exported_files_hashes(exports, tmp_path):
    from ct_pipeline.diagnosis.provenance import run_provenance

    models = load_diagnosis_models(exports["seg", "onnx"], exports["cls", "torchscript"], None, FAST)
    record = run_provenance(models.paths, models.precision, DiagnosisConfig(), models.seg.device.type)
    assert record["models"]["seg"] == {
        "kind": "seg",
        "sha256": sha256_of_file(exports["seg", "onnx"]),
        "file": str(exports["seg", "onnx"]),
    }
    assert record["models"]["cls"]["sha256"] == sha256_of_file(exports["cls", "torchscript"])


def _foreign_torchscript(path):
    """A TorchScript file ct did not write (no metadata): the U-Net, traced by someone else."""
    torch.jit.save(torch.jit.trace(threshold_unet(), torch.zeros(1, 7, 32, 32)), str(path))
    return path


def test_a_foreign_torchscript_file_runs_only_when_trusted(tmp_path):
    path = _foreign_torchscript(tmp_path / "theirs.pt")
    with pytest.raises(BadCheckpointError, match="ct did not export"):
        load_exported(path, "seg", option="--seg-model")
    model = load_exported(path, "seg", option="--seg-model", trust=True)
    assert model.metadata is None and model.input_shape == [None, 7, None, None]
    slices = torch.full((1, 7, 32, 32), 500.0)
    with torch.inference_mode():
        np.testing.assert_allclose(model(slices).numpy(), threshold_unet()(slices).numpy(), atol=1e-6)


def _foreign_onnx(path, channels: int):
    """An ONNX model without ct metadata taking (N, channels, H, W)."""
    network = torch.nn.Sequential(torch.nn.Conv2d(channels, 1, 3, padding=1), torch.nn.Sigmoid()).eval()
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim.AUTO, torch.export.Dim.AUTO
    program = torch.onnx.export(
        network,
        (torch.zeros(2, channels, 16, 16),),
        dynamo=True,
        input_names=["input"],
        dynamic_shapes=({0: batch, 2: height, 3: width},),
        verbose=False,
    )
    program.save(str(path))
    return path


def test_an_onnx_file_without_metadata_is_run_when_its_input_fits(tmp_path):
    model = load_exported(_foreign_onnx(tmp_path / "theirs.onnx", 7), "seg", option="--seg-model")
    assert model.metadata is None and model.input_shape == [None, 7, None, None]
    assert model(torch.zeros(3, 7, 8, 12)).shape == (3, 1, 8, 12)


def _scan(tmp_path):
    """A tiny LUNA16-style .mhd for the diagnose cases (never read: the models fail first)."""
    path = tmp_path / "1.2.826.0.1.3680043.8.498.7.mhd"
    write_mhd(
        np.zeros((4, 5, 6), np.int16), Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), path
    )
    return path


def _cases(tmp_path, exports, name):
    scan = _scan(tmp_path)

    def diagnose_with(seg, cls, *more):
        return ["diagnose", str(scan), "--seg-model", str(seg), "--cls-model", str(cls), *more]

    if name == "text file named .onnx":
        (tmp_path / "notes.onnx").write_text("not a model\n")
        return diagnose_with(tmp_path / "notes.onnx", exports["cls", "onnx"])
    if name == "classifier ONNX as --seg-model":
        return diagnose_with(exports["cls", "onnx"], exports["cls", "onnx"])
    if name == "malignancy ONNX as --cls-model":
        return diagnose_with(exports["seg", "onnx"], exports["mal", "onnx"])
    if name == "U-Net TorchScript as --cls-model":
        return diagnose_with(exports["seg", "torchscript"], exports["seg", "torchscript"])
    if name == "ONNX of another input shape":
        return diagnose_with(_foreign_onnx(tmp_path / "rgba.onnx", 4), exports["cls", "onnx"])
    if name == "foreign TorchScript":
        return diagnose_with(_foreign_torchscript(tmp_path / "theirs.pt"), exports["cls", "onnx"])
    if name == "bf16 with an exported model":
        return diagnose_with(exports["seg", "onnx"], exports["cls", "onnx"], "--precision", "bf16")
    if name == "export over an existing file":
        return ["models", "export", str(exports["seg", "ckpt"]), "--format", "onnx", "-o", str(exports["seg", "onnx"])]
    if name == "models info on a TorchScript export":
        return ["models", "info", str(exports["cls", "torchscript"])]
    if name == "export of an exported file":
        return [
            "models",
            "export",
            str(exports["seg", "onnx"]),
            "--format",
            "torchscript",
            "-o",
            str(tmp_path / "x.pt"),
        ]
    raise AssertionError(name)


CASES = {
    "text file named .onnx": r"^error: .*notes\.onnx \(--seg-model\) is not a loadable ONNX model \(.*\)\.$",
    "classifier ONNX as --seg-model": r"^error: .*cls\.onnx is an exported nodule classifier model \(kind 'cls'\), but "
    r"--seg-model needs a segmentation model \(kind 'seg'\); pass one exported from a seg checkpoint\.$",
    "malignancy ONNX as --cls-model": r"^error: .*mal\.onnx is an exported malignancy classifier model \(kind 'mal'\), "
    r"but --cls-model needs a nodule classifier model",
    "U-Net TorchScript as --cls-model": r"^error: .*seg\.pt is an exported segmentation model \(kind 'seg'\), but --cls-model",
    "ONNX of another input shape": r"^error: .*rgba\.onnx takes input of shape \(N, 4, N, N\), but --seg-model needs a "
    r"segmentation model taking \(N, odd channels, H, W\) with any batch size and any height and width; export the right",
    "foreign TorchScript": r"^error: .*theirs\.pt \(--seg-model\) is a TorchScript file that ct did not export \(no ct "
    r"metadata\), and TorchScript runs code when loaded; pass --trust-model if you trust its source",
    "bf16 with an exported model": r"^error: .*seg\.onnx is an exported model, which runs in fp32; leave out --precision",
    "export over an existing file": r"^error: .*seg\.onnx already exists; choose another output path or pass --force\.$",
    "export of an exported file": r"^error: .*seg\.onnx is an exported onnx model \(`ct models export`\), not a checkpoint, "
    r"and this command needs a checkpoint; `ct diagnose` runs exported files, other commands take the \.ckpt",
    "models info on a TorchScript export": r"^error: .*cls\.pt is an exported torchscript model \(`ct models export`\), not a "
    r"checkpoint, and this command needs a checkpoint;",
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(exports, tmp_path, name):
    result = run_ct(*_cases(tmp_path, exports, name))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(CASES[name], lines[0]), lines[0]


@pytest.mark.parametrize("command", ["export", "diagnose"])
def test_missing_onnxruntime_is_one_line(exports, tmp_path, monkeypatch, command):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a)
    )
    args = (
        ["models", "export", str(exports["seg", "ckpt"]), "--format", "onnx", "-o", str(tmp_path / "seg.onnx")]
        if command == "export"
        else [
            "diagnose",
            str(_scan(tmp_path)),
            "--seg-model",
            str(exports["seg", "onnx"]),
            "--cls-model",
            str(exports["cls", "ckpt"]),
        ]
    )
    result = run_ct(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: ONNX models need onnxruntime, which is not installed; install the ONNX extra with "
        "`pip install 'ct-pipeline[onnx]'` (or `pip install onnx onnxruntime onnxscript`)."
    )
    assert not (tmp_path / "seg.onnx").exists()


def test_export_cli_prints_what_it_wrote(exports, tmp_path):
    output = tmp_path / "models" / "cls.pt"
    result = run_ct("models", "export", str(exports["cls", "ckpt"]), "--format", "torchscript", "-o", str(output))
    assert result.exit_code == 0, result.output
    sha = sha256_of_file(exports["cls", "ckpt"])[:12]
    assert (
        result.stdout
        == f"wrote {output}: nodule classifier as torchscript, input (N, 1, 16, 16, 16), from checkpoint sha256 {sha}\n"
    )
    assert read_metadata(output).kind == "cls"
    assert [p.name for p in output.parent.iterdir()] == ["cls.pt"]  # no temporary file left beside it
