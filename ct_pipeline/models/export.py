"""Checkpoints out of Python: ``export_model`` writes a network as TorchScript or ONNX, with ``ct``'s metadata inside.

The metadata (:class:`ExportMetadata`) is one JSON object stored where each format keeps extra data:
a TorchScript extra file (``extra/ct_export.json`` in the archive) or an ONNX ``metadata_props``
entry, both under the key ``ct_export``. It says what ``ct diagnose`` needs to run the file without
the checkpoint (kind, input shape, HU range) and where the file came from (the checkpoint's sha256,
the ct, torch and opset versions). Both formats take any batch size; the U-Net also any height and
width (its lung boxes and tiles vary), as far as the U-Net allows (multiples of 4 with the book's depth).

The exported network is the checkpoint's, unchanged (no folded BatchNorm, fp32): parity with the
checkpoint is then a matter of kernel rounding only, which the numeric tests bound.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ct_pipeline import __version__
from ct_pipeline.atomic import atomic_path, write_failure
from ct_pipeline.errors import BadCheckpointError, BadInputError
from ct_pipeline.loading.fingerprint import sha256_of_file
from ct_pipeline.models.checkpoints import build_model, load_checkpoint

EXPORT_FORMATS = ("torchscript", "onnx")
METADATA_KEY = "ct_export"
TORCHSCRIPT_EXTRA_FILE = f"{METADATA_KEY}.json"
ONNX_OPSET = 18  # the dynamo exporter's default in torch 2.13; onnxruntime >= 1.14 runs it
BOOK_HU_RANGE = (-1000.0, 1000.0)
_OUTPUT_NAMES = {"seg": ["probability"], "cls": ["logits", "probability"], "mal": ["logits", "probability"]}
_INSTALL_HINT = (
    "install the ONNX extra with `pip install 'ct-pipeline[onnx]'` (or `pip install onnx onnxruntime onnxscript`)"
)


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported file says about itself.

    Attributes:
        kind: "seg", "cls" or "mal".
        arch: the network's architecture ("unet-wrapper" or "luna-classifier").
        model_config: the checkpoint's model_config (plain data).
        input_shape: (N, C, ...) with None for the dynamic axes: [None, 7, None, None] for the U-Net,
            [None, 1, 32, 48, 48] for the classifiers.
        output_names: the outputs in order ("probability" for the U-Net; "logits", "probability").
        hu_range: the HU clipping of the inputs the network was trained on.
        spacing_mm: the voxel spacing (z, y, x) in mm of a classifier's crops (its model config's
            ``crop_spacing_mm``); None: each series' native voxels (and the U-Net, which has none).
        checkpoint_sha256: SHA-256 of the checkpoint file it was exported from.
        checkpoint_name: that file's name (not its path: paths are private and move).
        ct_version: the ct that exported it.
        torch_version: the torch that exported it.
        format: "torchscript" or "onnx".
        opset: the ONNX opset (None for TorchScript).
    """

    kind: str
    arch: str
    model_config: dict[str, Any]
    input_shape: list[int | None]
    output_names: list[str]
    hu_range: list[float]
    spacing_mm: list[float] | None
    checkpoint_sha256: str
    checkpoint_name: str
    ct_version: str
    torch_version: str
    format: str
    opset: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: Path) -> ExportMetadata:
        """Parse the stored JSON; a damaged record is a BadCheckpointError naming ``source``."""
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as err:
            raise BadCheckpointError(
                f"{source} has damaged ct export metadata ({err}); export it again with `ct models export`."
            ) from err


def input_shape_of(kind: str, model_config: dict[str, Any]) -> list[int | None]:
    """The network's input shape with None on the axes that may vary (batch; the U-Net's height and width)."""
    if kind == "seg":
        return [None, int(model_config.get("in_channels", 7)), None, None]
    return [None, 1, *(int(n) for n in model_config.get("crop_shape_irc", (32, 48, 48)))]


def _example_input(shape: list[int | None]) -> torch.Tensor:
    """A batch of 2 (so no axis is specialised to 1) of HU-like values; the U-Net's free sides 64x64."""
    concrete = [2, *(n if n is not None else 64 for n in shape[1:])]
    generator = torch.Generator().manual_seed(0)
    return torch.rand(concrete, generator=generator) * 2000.0 - 1000.0


def export_model(
    checkpoint_path: os.PathLike | str, fmt: str, output: os.PathLike | str, *, overwrite: bool = False
) -> ExportMetadata:
    """Write the checkpoint's network to ``output`` as TorchScript or ONNX, metadata inside.

    Args:
        checkpoint_path: a project checkpoint (``ct train-*`` or ``ct models import-book``).
        fmt: "torchscript" or "onnx".
        output: the file to write (atomically: a failed export leaves no partial file).
        overwrite: replace an existing ``output``.

    Returns:
        The metadata written into the file.

    Raises:
        BadCheckpointError: the checkpoint is unreadable or not a project checkpoint.
        BadInputError: unknown format, ``output`` exists, or the ONNX packages are missing.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadInputError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}.")
    output = Path(output)
    if output.exists() and not overwrite:
        raise BadInputError(f"{output} already exists; choose another output path or pass --force.")
    if fmt == "onnx":
        require_onnx(need_exporter=True)
    checkpoint = load_checkpoint(checkpoint_path)
    network = build_model(checkpoint, "cpu")
    metadata = ExportMetadata(
        kind=checkpoint.kind,
        arch=checkpoint.arch,
        model_config=checkpoint.model_config,
        input_shape=input_shape_of(checkpoint.kind, checkpoint.model_config),
        output_names=_OUTPUT_NAMES[checkpoint.kind],
        # Checkpoints record no HU range: training (datasets) and diagnosis clip to the book's by default.
        hu_range=list(BOOK_HU_RANGE),
        spacing_mm=checkpoint.model_config.get("crop_spacing_mm"),
        checkpoint_sha256=sha256_of_file(checkpoint.path),
        checkpoint_name=checkpoint.path.name,
        ct_version=__version__,
        torch_version=torch.__version__,
        format=fmt,
        opset=ONNX_OPSET if fmt == "onnx" else None,
    )
    with atomic_path(output) as tmp:
        try:
            if fmt == "torchscript":
                _write_torchscript(network, metadata, tmp)
            else:
                _write_onnx(network, metadata, tmp)
        except OSError as err:
            raise write_failure(output, err) from err
    return metadata


def _write_torchscript(network: nn.Module, metadata: ExportMetadata, path: Path) -> None:
    # Tracing, not scripting: the networks have no data-dependent control flow, and tracing records
    # the shape arithmetic of the U-Net's skip connections as ops, so other heights and widths work.
    # torch 2.13 deprecates torch.jit in favour of torch.export, but TorchScript is still what
    # C++ (libtorch) and MONAI bundles load; the warnings would only puzzle the user.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(network, _example_input(metadata.input_shape), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA_FILE: metadata.to_json()})


def _write_onnx(network: nn.Module, metadata: ExportMetadata, path: Path) -> None:
    import onnx  # optional extra, checked by require_onnx
    from torch.export import Dim

    dynamic = {
        axis: (Dim("batch") if axis == 0 else Dim.AUTO) for axis, n in enumerate(metadata.input_shape) if n is None
    }
    # The exporter's deprecation warnings and its "torchvision is not installed" log lines say nothing to the user.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                network,
                (_example_input(metadata.input_shape),),
                dynamo=True,
                input_names=["input"],
                output_names=metadata.output_names,
                dynamic_shapes=(dynamic,),
                opset_version=ONNX_OPSET,
                external_data=False,
                verbose=False,
            )
    finally:
        registration_log.setLevel(level)
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    onnx.save_model(model, str(path))


def require_onnx(need_exporter: bool = False) -> None:
    """Raise a one-line BadInputError when the optional ONNX packages are missing.

    ``need_exporter``: also onnx and onnxscript (torch's exporter); running needs only onnxruntime.
    """
    import importlib.util

    names = ["onnxruntime", *(["onnx", "onnxscript"] if need_exporter else [])]
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInputError(f"ONNX models need {', '.join(missing)}, which is not installed; {_INSTALL_HINT}.")
