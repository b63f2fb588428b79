"""The three networks ``diagnose`` uses: finding their checkpoints, loading them, preparing them to run.

By default the checkpoints are the newest ``best.ckpt`` of each kind that the training apps
wrote under the runs folder (``ct train-seg/train-cls --out runs/...``); explicit paths win.
Every file is loaded with ``weights_only=True`` and its kind checked, so a classifier given as
``--seg-model`` is refused with a message that says so. A file written by ``ct models export``
(ONNX or TorchScript) is run through :mod:`ct_pipeline.models.exported` instead, in fp32 on the
CPU: it is already what it will run as, so precision, memory format and folding do not apply.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.devices import resolve_device, resolve_precision
from ct_pipeline.diagnosis.config import InferenceOptions
from ct_pipeline.diagnosis.fast_unet import fold_unet
from ct_pipeline.errors import BadCheckpointError, BadInputError, CtError, NotFoundError
from ct_pipeline.models import InferenceModel, build_model, load_checkpoint, prepare_for_inference
from ct_pipeline.models.checkpoint_path import checkpoint_file
from ct_pipeline.models.checkpoints import KIND_NAMES
from ct_pipeline.models.exported import ExportedModel, exported_format, load_exported
from ct_pipeline.threads import capped_workers, thread_budget

log = logging.getLogger(__name__)

CHECKPOINT_PATTERNS = ("best.ckpt", "best*.pt", "*best*.ckpt")
_OPTION_OF_KIND = {"seg": "--seg-model", "cls": "--cls-model", "mal": "--mal-model"}


@dataclass(frozen=True, eq=False)
class DiagnosisModels:
    """Networks ready to run.

    Attributes:
        seg: the U-Net; (N, 7, H, W) HU -> (N, 1, H, W) probability.
        cls: the nodule classifier; (N, 1, 32, 48, 48) HU -> (logits, probabilities); None when only
            the candidates are wanted (`ct hard-negatives`).
        mal: the malignancy classifier, or None.
        context_slices: slices on each side of the segmented one (from the U-Net's input channels).
        crop_shape_irc: the classifiers' input size.
        crop_spacing_mm: the spacing (z, y, x) in mm the classifiers' crops are resampled to, from
            the nodule classifier's model config; None: native voxels (the book's, older checkpoints).
        paths: the checkpoint of each kind, for the record.
        precision: the precision each network runs in, e.g. {"seg": "fp32", "cls": "fp32"}.
        workers: batches run side by side, each single-threaded (1: one at a time).
        release_memory: return the U-Net's freed activations to the system (see ``runtime``).
    """

    seg: InferenceModel | ExportedModel
    cls: InferenceModel | ExportedModel | None
    mal: InferenceModel | ExportedModel | None
    context_slices: int
    crop_shape_irc: tuple[int, int, int]
    paths: dict[str, str]
    precision: dict[str, str]
    workers: int = 1
    release_memory: bool = False
    crop_spacing_mm: tuple[float, float, float] | None = None


def find_newest_checkpoint(runs_dir: Path, kind: str) -> Path | None:
    """The most recently written best checkpoint of ``kind`` under ``runs_dir``, or None.

    Looks at ``runs_dir/**/best.ckpt`` (what ``ct train-*`` writes) and ``**/best*.pt``; files
    that are not project checkpoints of that kind are skipped.
    """
    if not runs_dir.is_dir():
        return None
    found: set[Path] = set()
    for pattern in CHECKPOINT_PATTERNS:
        found.update(p for p in runs_dir.rglob(pattern) if p.is_file())
    for path in sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True):
        try:
            if load_checkpoint(path).kind == kind:
                return path
        except CtError as err:
            log.debug("skipping %s: %s", path, err)
    return None


def resolve_checkpoint(explicit: Path | None, kind: str, runs_dir: Path | None, required: bool = True) -> Path | None:
    """``explicit``, else the newest of ``kind`` under ``runs_dir``; raise if ``required`` and none."""
    if explicit is not None:
        return checkpoint_file(explicit, _OPTION_OF_KIND[kind])
    found = find_newest_checkpoint(runs_dir, kind) if runs_dir is not None else None
    if found is None and required:
        where = f"under {runs_dir}" if runs_dir is not None else "(no runs folder given)"
        raise NotFoundError(
            f"no {KIND_NAMES[kind]} checkpoint found {where}; pass {_OPTION_OF_KIND[kind]} PATH "
            f"(e.g. one made by `ct models import-book ... --kind {kind}` or `ct train-{'seg' if kind == 'seg' else 'cls'}`)"
        )
    if found is not None:
        log.info("%s: using %s", _OPTION_OF_KIND[kind], found)
    return found


def load_diagnosis_models(
    seg_path: Path,
    cls_path: Path | None,
    mal_path: Path | None = None,
    options: InferenceOptions = InferenceOptions(),
) -> DiagnosisModels:
    """Load and prepare the networks.

    Raises:
        BadCheckpointError: a file is missing, unsafe, not a project checkpoint, or of the wrong kind.
        BadInputError: bad device or precision.
    """
    device = resolve_device(options.device)
    paths = {kind: path for kind, path in (("seg", seg_path), ("cls", cls_path), ("mal", mal_path)) if path is not None}
    workers = (
        capped_workers(options.workers, "InferenceOptions.workers")
        if options.workers
        else (1 if device.type == "cuda" else thread_budget(options.threads).threads)
    )
    exported = {kind: path for kind, path in paths.items() if exported_format(path) is not None}
    if exported and (
        options.precision not in ("auto", "fp32") or options.classifier_precision not in (None, "auto", "fp32")
    ):
        raise BadInputError(
            f"{next(iter(exported.values()))} is an exported model, which runs in fp32; leave out --precision/"
            "--cls-precision or give checkpoints."
        )
    prepared: dict[str, InferenceModel | ExportedModel] = {}
    precision: dict[str, str] = {}
    configs: dict[str, dict] = {}
    for kind, path in paths.items():
        if kind in exported:
            # One onnxruntime thread per worker when batches run side by side, as torch's are.
            threads = 1 if workers > 1 else thread_budget(options.threads).threads
            model = load_exported(path, kind, option=_OPTION_OF_KIND[kind], trust=options.trust_model, threads=threads)
            prepared[kind], precision[kind], configs[kind] = model, "fp32", model.model_config
            continue
        checkpoint = load_checkpoint(path, expected_kind=kind, option=_OPTION_OF_KIND[kind])
        network = build_model(checkpoint, "cpu")
        if kind == "seg" and options.fold_batchnorm:
            network = fold_unet(network)
        requested = (
            options.precision if kind == "seg" or options.classifier_precision is None else options.classifier_precision
        )
        precision[kind] = resolve_precision(requested, device, kind)
        channels_last = True if options.channels_last is None else options.channels_last
        prepared[kind] = prepare_for_inference(network, device, precision[kind], channels_last)
        configs[kind] = checkpoint.model_config
    seg_config = configs["seg"]
    classifier_config = configs.get("cls", {})
    crop = tuple(classifier_config.get("crop_shape_irc", (32, 48, 48)))
    if "mal" in configs and tuple(configs["mal"].get("crop_shape_irc", crop)) != crop:
        raise BadCheckpointError(
            f"{mal_path} takes crops of {configs['mal']['crop_shape_irc']} voxels but {cls_path} "
            f"takes {list(crop)}; use a malignancy model fine-tuned from this nodule classifier."
        )
    spacing = _crop_spacing(classifier_config)
    if "mal" in configs and _crop_spacing(configs["mal"]) != spacing:
        raise BadCheckpointError(
            f"{mal_path} takes crops at {_spacing_words(_crop_spacing(configs['mal']))} but {cls_path} at "
            f"{_spacing_words(spacing)}; use a malignancy model fine-tuned from this nodule classifier."
        )
    in_channels = int(seg_config.get("in_channels", 7))
    if in_channels % 2 != 1:
        raise BadCheckpointError(
            f"{seg_path} has {in_channels} input channels; the U-Net needs an odd number (the slice and its "
            "neighbours on both sides)."
        )
    return DiagnosisModels(
        seg=prepared["seg"],
        cls=prepared.get("cls"),
        mal=prepared.get("mal"),
        context_slices=in_channels // 2,
        crop_shape_irc=crop,  # type: ignore[arg-type]
        paths={kind: os.fspath(path) for kind, path in paths.items()},
        precision=precision,
        workers=workers,
        release_memory=options.release_memory and device.type == "cpu",
        crop_spacing_mm=spacing,
    )


def _spacing_words(spacing: tuple[float, float, float] | None) -> str:
    return "native voxels" if spacing is None else " x ".join(f"{v:g}" for v in spacing) + " mm (z, y, x)"


def _crop_spacing(model_config: dict) -> tuple[float, float, float] | None:
    """A classifier's crop spacing (z, y, x) in mm; None (native) where its config has none."""
    stored = model_config.get("crop_spacing_mm")
    return None if stored is None else tuple(float(v) for v in stored)  # type: ignore[return-value]
