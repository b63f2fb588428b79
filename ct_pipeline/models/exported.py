"""Run an exported network (``ct models export``) the way diagnosis runs a checkpoint's.

:func:`load_exported` opens a TorchScript or ONNX file, checks it is of the kind and input shape
the option needs, and returns an :class:`ExportedModel`: called on a float32 batch it gives what
:class:`~ct_pipeline.models.InferenceModel` gives (the U-Net's probabilities; the classifiers'
``(logits, probabilities)``), so the pipeline cannot tell them apart.

A TorchScript file is code (TorchScript operators run on loading and calling), so a file without
``ct``'s metadata is refused unless the user trusts it. The metadata is read from the zip archive
before ``torch.jit.load``, so refusing runs nothing. It is a label, not a signature: trust the
files you export, as you would a checkpoint. ONNX files are a graph of standard operators run by
onnxruntime; one without metadata is accepted when its input fits the option.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.errors import BadCheckpointError
from ct_pipeline.models.checkpoint_path import exported_format
from ct_pipeline.models.checkpoints import KIND_NAMES
from ct_pipeline.models.export import (
    METADATA_KEY,
    TORCHSCRIPT_EXTRA_FILE,
    ExportMetadata,
    input_shape_of,
    require_onnx,
)

_DEFAULT_CONFIG: dict[str, dict[str, Any]] = {"seg": {"in_channels": 7}, "cls": {}, "mal": {}}


@dataclass(frozen=True, eq=False)
class ExportedModel:
    """An exported network ready for inference on the CPU, called like an InferenceModel.

    Attributes:
        path: the file.
        format: "torchscript" or "onnx".
        metadata: what the file says about itself (for a trusted file without it: what the option implies).
        runner: the loaded ``torch.jit.ScriptModule`` or ``onnxruntime.InferenceSession``.
    """

    path: Path
    format: str
    metadata: ExportMetadata | None
    runner: Any
    kind: str
    input_shape: list[int | None]
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False  # the segmentation stage lays out inputs for torch only when this is True

    def __call__(self, batch: torch.Tensor) -> Any:
        """Outputs as float32 tensors: (N, 1, H, W) probabilities, or (logits, probabilities) each (N, 2)."""
        batch = batch.to("cpu", dtype=torch.float32).contiguous()
        if self.format == "torchscript":
            with torch.inference_mode():
                outputs = self.runner(batch)
        else:
            name = self.runner.get_inputs()[0].name
            outputs = tuple(torch.from_numpy(o) for o in self.runner.run(None, {name: batch.numpy()}))
            outputs = outputs[0] if self.kind == "seg" else outputs
        if isinstance(outputs, tuple):
            return tuple(output.float() for output in outputs)
        return outputs.float()

    @property
    def model_config(self) -> dict[str, Any]:
        return self.metadata.model_config if self.metadata is not None else _DEFAULT_CONFIG[self.kind]


def load_exported(
    path: os.PathLike | str,
    expected_kind: str,
    *,
    option: str,
    trust: bool = False,
    threads: int | None = None,
) -> ExportedModel:
    """Open an exported network for ``option`` (e.g. "--seg-model") and check it fits.

    Args:
        path: a ``.onnx`` file or a TorchScript archive.
        expected_kind: "seg", "cls" or "mal".
        option: the option that named the file, quoted in messages.
        trust: load a TorchScript file that ``ct`` did not export (it runs its code).
        threads: onnxruntime's intra-op threads (None: its default, all cores).

    Raises:
        BadCheckpointError: not a model, of another kind or input shape, or an untrusted TorchScript file.
        BadInputError: onnxruntime is missing.
    """
    path = Path(path)
    fmt = exported_format(path)
    if fmt is None or not path.is_file():
        raise BadCheckpointError(
            f"{path} ({option}) is not an exported model (a .onnx file or a TorchScript archive); "
            "write one with `ct models export`."
        )
    if fmt == "torchscript":
        metadata = _torchscript_metadata(path)
        if metadata is None and not trust:
            raise BadCheckpointError(
                f"{path} ({option}) is a TorchScript file that ct did not export (no ct metadata), and TorchScript "
                "runs code when loaded; pass --trust-model if you trust its source, or export it with `ct models export`."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's, see models/export.py
                runner: Any = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:  # any failure here is a property of the file
            raise BadCheckpointError(f"{path} ({option}) is not a loadable TorchScript model ({err}).") from err
        shape = metadata.input_shape if metadata else input_shape_of(expected_kind, _DEFAULT_CONFIG[expected_kind])
    else:
        require_onnx()
        runner, metadata, shape = _onnx_session(path, option, threads)
    kind = metadata.kind if metadata is not None else expected_kind
    _check_fits(path, option, expected_kind, kind, shape)
    return ExportedModel(path=path, format=fmt, metadata=metadata, runner=runner, kind=expected_kind, input_shape=shape)


def read_metadata(path: os.PathLike | str) -> ExportMetadata | None:
    """The ct metadata of an exported file, or None when it has none (nothing is run)."""
    path = Path(path)
    fmt = exported_format(path)
    if fmt == "torchscript":
        return _torchscript_metadata(path)
    if fmt == "onnx":
        require_onnx(need_exporter=True)
        import onnx

        try:
            model = onnx.load_model(str(path), load_external_data=False)
        except Exception as err:
            raise BadCheckpointError(f"{path} is not a readable ONNX model ({err}).") from err
        return _metadata_from_props(path, {p.key: p.value for p in model.metadata_props})
    raise BadCheckpointError(f"{path} is not an exported model; write one with `ct models export`.")


def _torchscript_metadata(path: Path) -> ExportMetadata | None:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA_FILE}")]
        return ExportMetadata.from_json(archive.read(names[0]), path) if names else None


def _metadata_from_props(path: Path, props: dict[str, str]) -> ExportMetadata | None:
    return ExportMetadata.from_json(props[METADATA_KEY], path) if METADATA_KEY in props else None


def _onnx_session(path: Path, option: str, threads: int | None) -> tuple[Any, ExportMetadata | None, list[int | None]]:
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    if threads:
        settings.intra_op_num_threads = threads
    settings.log_severity_level = 3  # errors only: its warnings would interleave with ct's output
    try:
        session = onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for unreadable or invalid graphs
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadCheckpointError(f"{path} ({option}) is not a loadable ONNX model ({message}).") from err
    metadata = _metadata_from_props(path, dict(session.get_modelmeta().custom_metadata_map))
    inputs = session.get_inputs()
    shape = [d if isinstance(d, int) else None for d in inputs[0].shape] if len(inputs) == 1 else []
    return session, metadata, shape


def _check_fits(path: Path, option: str, expected_kind: str, kind: str, shape: list[int | None]) -> None:
    if kind != expected_kind:
        raise BadCheckpointError(
            f"{path} is an exported {KIND_NAMES.get(kind, kind)} model (kind {kind!r}), but {option} needs a "
            f"{KIND_NAMES[expected_kind]} model (kind {expected_kind!r}); pass one exported from a {expected_kind} checkpoint."
        )
    wanted = "(N, odd channels, H, W)" if expected_kind == "seg" else "(N, 1, I, R, C)"
    rank = 4 if expected_kind == "seg" else 5
    fits = (
        len(shape) == rank
        and shape[0] is None
        and (
            (shape[1] is not None and shape[1] % 2 == 1 and shape[2] is None and shape[3] is None)
            if expected_kind == "seg"
            else (shape[1] == 1 and all(n is not None for n in shape[2:]))
        )
    )
    if not fits:
        found = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ")" if shape else "several inputs"
        raise BadCheckpointError(
            f"{path} takes input of shape {found}, but {option} needs a {KIND_NAMES[expected_kind]} model taking "
            f"{wanted} with any batch size{' and any height and width' if rank == 4 else ''}; "
            "export the right checkpoint with `ct models export`."
        )


def crop_shape_of(model: ExportedModel) -> tuple[int, int, int]:
    """The classifier's crop size (I, R, C) from its input shape."""
    return tuple(int(n) for n in model.input_shape[2:])  # type: ignore[return-value]
