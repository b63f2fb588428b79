"""The three apps as small "task" objects: what differs between them, and nothing else.

A task builds its model and datasets, turns a model output into per-sample losses, and turns
an epoch's outputs into metrics. The loop in :mod:`ct_pipeline.training.loop` does the rest
(devices, DDP, precision, optimizer, checkpoints, logging) the same way for all of them.

- :class:`ClassifierTask` -- "cls": nodule vs non-nodule on 32x48x48 candidate crops;
  "mal": benign vs malignant on annotated nodules, optionally fine-tuned from a "cls" model.
- :class:`SegmentationTask` -- "seg": the U-Net on 64x64 crops around nodules, validated on
  whole slices of the validation series, with per-nodule recall.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import Catalog, open_catalog
from ct_pipeline.datasets import (
    ClassificationDataset,
    ClassificationDatasetConfig,
    SegmentationDataset,
    SegmentationDatasetConfig,
    augment_batch,
    collate_crops,
)
from ct_pipeline.datasets.classification import median_spacing_irc_mm
from ct_pipeline.errors import BadCheckpointError, BadDataError, BadInputError
from ct_pipeline.models import ClassifierConfig, LunaClassifier, SegmentationUNet, load_checkpoint
from ct_pipeline.models.checkpoints import load_state_checked
from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots
from ct_pipeline.training.config import CLASSIFIER_BLOCKS, TrainConfig, crop_spacing_text
from ct_pipeline.training.distributed import DistContext, all_gather_columns, all_gather_objects, all_reduce_sum
from ct_pipeline.training.metrics import (
    ClassificationMeter,
    SegmentationMeter,
    classification_metrics,
    segmentation_loss,
    segmentation_metrics,
    size_only_baseline,
)

log = logging.getLogger(__name__)

# Per-nodule recall is also reported for nodules at least this large (the README's quality target).
NODULE_RECALL_MIN_MM = 4.0
N_EXAMPLE_IMAGES = 4
# Classifier shape options a malignancy fine-tune takes from its source nodule model.
_SOURCE_SHAPE_OPTIONS = ("block_batchnorm", "centre_head")


@dataclass
class Batch:
    """One batch on the training device: inputs, targets and what identifies the samples."""

    inputs: torch.Tensor
    targets: torch.Tensor
    meta: tuple[Any, ...]


class Task(Protocol):
    """What the loop asks of an app. Attributes: ``kind`` (checkpoint kind), ``best_metric``
    (validation metric, higher is better, that picks ``best.ckpt``), ``summary_keys`` (metrics on
    the console line), ``memory_format`` (of inputs and model), ``collate_fn`` (the loaders'; None:
    torch's default)."""

    kind: str
    best_metric: str
    summary_keys: tuple[str, ...]
    memory_format: torch.memory_format
    collate_fn: Any

    def build_model(self) -> nn.Module: ...
    def train_mode(self, model: nn.Module) -> None: ...
    def build_datasets(self, catalog: Catalog, cache: CropCache, ctx: DistContext) -> tuple[Any, Any]: ...
    def val_batches(self, dataset: Any, batch_size: int) -> list[list[int]] | None: ...
    def to_device(self, batch: Sequence[Any], device: torch.device) -> Batch: ...
    def augment(self, batch: Batch, generator: torch.Generator) -> Batch: ...
    def losses(self, outputs: Any, batch: Batch) -> torch.Tensor: ...
    def new_meter(self, device: torch.device, split: str, keep_examples: bool) -> Any: ...
    def record(self, meter: Any, outputs: Any, batch: Batch, losses: torch.Tensor) -> None: ...
    def summarize(self, meter: Any, ctx: DistContext) -> tuple[dict[str, float], dict[str, Any]]: ...


def training_catalog(config: TrainConfig) -> Catalog:
    """The series and candidates a run trains and validates on (less ``--exclude-series``)."""
    roots, cache_dir = resolve_data_roots(config.data_roots), resolve_cache_dir(config.cache_dir)
    section = config.classification
    catalog = open_catalog(roots, cache_dir, section.extra_candidates, own_candidates=section.own_candidates)
    return catalog.excluding(config.exclude_series)


def _sampling_options(config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """The dataset options both tasks take from the run: epoch length, split, seed and this rank's share."""
    return {
        "epoch_size": config.epoch_size,
        "val_stride": config.val_stride,
        "seed": config.seed,
        "rank": ctx.rank,
        "world_size": ctx.world_size,
    }


class ClassifierTask:
    """Nodule ("cls") or malignancy ("mal") classification with the book's LunaClassifier."""

    best_metric = "roc_auc"  # threshold-free, and what the quality target is stated in
    summary_keys = ("loss", "precision", "recall", "f1", "roc_auc", "size_auc")  # size_auc: "mal" only
    # The dataset cuts a whole batch into one (shared-memory) buffer: hand it on, no second copy.
    collate_fn = staticmethod(collate_crops)

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.kind = config.task
        self.memory_format = torch.channels_last_3d if config.channels_last else torch.contiguous_format
        self.frozen: tuple[str, ...] = ()
        self.val_constants: dict[str, float] = {}  # "mal": the size-only baseline, reported with every validation
        self._crop_spacing: tuple[tuple[float, float, float] | None] | None = None  # resolved once (a 1-tuple)

    def crop_spacing_mm(self, catalog: Catalog | None = None) -> tuple[float, float, float] | None:
        """The crops' spacing (z, y, x) in mm or None (native): a fine-tune's source's, else the
        config's, with "auto" the training series' median (from ``catalog``, opened if not given)."""
        if self._crop_spacing is None:
            self._crop_spacing = (self._resolve_crop_spacing(catalog),)
        return self._crop_spacing[0]

    def _resolve_crop_spacing(self, catalog: Catalog | None) -> tuple[float, float, float] | None:
        wanted = self.config.classification.crop_spacing_mm
        finetune = self.config.malignancy.finetune
        if finetune is not None:
            stored = load_checkpoint(finetune, "cls", option="--finetune").model_config.get("crop_spacing_mm")
            source = None if stored is None else tuple(float(v) for v in stored)
            if isinstance(wanted, tuple) and wanted != source:
                raise BadInputError(
                    f"--crop-spacing {crop_spacing_text(wanted)}: --finetune {finetune} was trained on crops at "
                    f"{crop_spacing_text(source)}, which the fine-tune keeps; leave --crop-spacing out"
                )
            return source  # type: ignore[return-value]
        if wanted != "auto":
            return wanted  # type: ignore[return-value]
        if catalog is None:
            catalog = training_catalog(self.config)
        spacing = median_spacing_irc_mm(catalog, catalog.select("train", self.config.val_stride))
        log.info("--crop-spacing auto: %s mm (z,y,x), the training series' median", crop_spacing_text(spacing))
        return spacing

    # -- model and data ----------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """A fresh LunaClassifier; for a fine-tune, the nodule model's weights with a new head and
        all but the last ``finetune_depth`` blocks frozen (book ch. 14)."""
        shape, malignancy = self.config.classification, self.config.malignancy
        spacing = self.crop_spacing_mm()
        if malignancy.finetune is None:
            return LunaClassifier(
                ClassifierConfig(
                    block_batchnorm=shape.block_batchnorm, centre_head=shape.centre_head, crop_spacing_mm=spacing
                )
            )
        source = load_checkpoint(malignancy.finetune, "cls", option="--finetune")
        model = LunaClassifier(
            ClassifierConfig(
                **{name: bool(source.model_config.get(name, False)) for name in _SOURCE_SHAPE_OPTIONS},
                crop_spacing_mm=spacing,
            )
        )
        # Keys an older checkpoint lacks (the options above) take the model's value; any other difference refuses.
        if {**model.config.to_dict(), **source.model_config} != model.config.to_dict():
            raise BadCheckpointError(
                f"--finetune {source.path} has model_config {source.model_config}, but training builds "
                f"{model.config.to_dict()}; fine-tune from a checkpoint of the book's classifier shape"
            )
        fresh_head = {name: t for name, t in model.state_dict().items() if name.startswith("head_linear.")}
        load_state_checked(model, {**source.model_state, **fresh_head}, str(source.path))
        trained = CLASSIFIER_BLOCKS[-malignancy.finetune_depth :]
        self.frozen = tuple(name for name in CLASSIFIER_BLOCKS if name not in trained)
        for name, parameter in model.named_parameters():
            if name.split(".")[0] in self.frozen:
                parameter.requires_grad_(False)
        return model

    def train_mode(self, model: nn.Module) -> None:
        """Training mode, except frozen blocks: their BatchNorm statistics stay the nodule model's."""
        model.train()
        for name in self.frozen:
            getattr(model, name).eval()

    def build_datasets(self, catalog: Catalog, cache: CropCache, ctx: DistContext) -> tuple[Any, Any]:
        common = {
            "mode": "malignancy" if self.kind == "mal" else "nodule",
            "crop_irc": ClassifierConfig().crop_shape_irc,  # the network's input, as diagnosis cuts it
            "crop_spacing_mm": self.crop_spacing_mm(catalog),
            "negatives_per_positive": self.config.classification.balance_ratio,
            **_sampling_options(self.config, ctx),
        }
        section = self.config.classification
        own = {"own_share": section.own_share, "own_positive_share": section.own_positive_share}
        train = ClassificationDataset(catalog, cache, ClassificationDatasetConfig(split="train", **common, **own))
        val = ClassificationDataset(catalog, cache, ClassificationDatasetConfig(split="val", **common))
        what = "malignant nodule" if self.kind == "mal" else "nodule candidate"
        val_series = set(catalog.candidates.loc[val.table_rows, "series_uid"])
        _require_positives(int(val.is_positive.sum()), what, len(val_series), self.config)
        if self.kind == "mal":
            # Malignancy rises with size, so the fine-tune is only worth it if it beats size alone.
            diameters = catalog.candidates["diameter_mm"]
            self.val_constants = size_only_baseline(
                diameters.loc[train.table_rows].to_numpy(),
                train.is_positive,
                diameters.loc[val.table_rows].to_numpy(),
                val.is_positive,
            )
        return train, val

    def val_batches(self, dataset: Any, batch_size: int) -> list[list[int]] | None:
        return None  # crops all have one shape: plain batching

    # -- one batch -----------------------------------------------------------------------------

    def to_device(self, batch: Sequence[Any], device: torch.device) -> Batch:
        crops, labels, rows = batch
        return Batch(crops.to(device, non_blocking=True), labels.to(device, non_blocking=True), (rows,))

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        inputs = augment_batch(batch.inputs, self.config.augmentation, generator)
        return Batch(inputs, batch.targets, batch.meta)

    def losses(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: Batch) -> torch.Tensor:
        logits, _ = outputs
        return F.cross_entropy(logits.float(), batch.targets, reduction="none")

    # -- metrics -------------------------------------------------------------------------------

    def new_meter(self, device: torch.device, split: str, keep_examples: bool) -> ClassificationMeter:
        return ClassificationMeter(split)

    def record(self, meter: ClassificationMeter, outputs: Any, batch: Batch, losses: torch.Tensor) -> None:
        _, probabilities = outputs
        meter.update(probabilities[:, 1], batch.targets, losses)

    def summarize(self, meter: ClassificationMeter, ctx: DistContext) -> tuple[dict[str, float], dict[str, Any]]:
        """Metrics over all ranks, and the per-sample arrays for TensorBoard's curves."""
        columns = all_gather_columns(meter.local(ctx.device), ctx).cpu().numpy()
        probabilities, labels, losses = columns[0], columns[1].astype(np.int64), columns[2]
        metrics = classification_metrics(labels, probabilities, losses)
        if meter.split == "val":
            metrics.update(self.val_constants)
        return metrics, {"labels": labels, "probabilities": probabilities}


class SegmentationTask:
    """The book's U-Net, Dice loss with weighted false negatives."""

    best_metric = "dice"
    summary_keys = ("loss", "precision", "recall", "dice", "nodule_recall")
    collate_fn = None

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.kind = "seg"
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self._val_nodule_masks: dict[str, list] = {}
        self._val_nodule_diameters: dict[str, np.ndarray] = {}

    def build_model(self) -> nn.Module:
        return SegmentationUNet()

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    def build_datasets(self, catalog: Catalog, cache: CropCache, ctx: DistContext) -> tuple[Any, Any]:
        common = _sampling_options(self.config, ctx)
        train = SegmentationDataset(
            catalog,
            cache,
            SegmentationDatasetConfig(
                split="train", background_share=self.config.segmentation.background_share, **common
            ),
        )
        val = SegmentationDataset(catalog, cache, SegmentationDatasetConfig(split="val", **common))
        # Every rank counts all validation nodules (it validates a share of the slices, but any
        # rank's slice may be the one that finds a nodule).
        nodules = catalog.candidates[catalog.candidates["is_nodule"] & catalog.candidates["has_annotation"]]
        for uid in val.series_uids:
            # series_masks lists a series' nodules in table order, as this does
            self._val_nodule_masks[uid] = val.series_masks(uid)
            self._val_nodule_diameters[uid] = nodules[nodules["series_uid"] == uid]["diameter_mm"].to_numpy()
        return train, val

    def val_batches(self, dataset: SegmentationDataset, batch_size: int) -> list[list[int]]:
        """Batches of consecutive whole slices of one size (series differ in rows and cols)."""
        batches: list[list[int]] = []
        last_shape = None
        for index in range(len(dataset)):
            shape = dataset.sample_window(index)[3]
            if shape != last_shape or len(batches[-1]) == batch_size:
                batches.append([])
                last_shape = shape
            batches[-1].append(index)
        return batches

    def to_device(self, batch: Sequence[Any], device: torch.device) -> Batch:
        images, labels, uids, slice_indices = batch
        return Batch(
            images.to(device, non_blocking=True), labels.to(device, non_blocking=True), (list(uids), slice_indices)
        )

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        inputs, targets = augment_batch(batch.inputs, self.config.augmentation, generator, batch.targets)
        return Batch(inputs, targets, batch.meta)

    def losses(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weights = self.config.segmentation
        return segmentation_loss(outputs.float(), batch.targets, weights.fn_loss_weight, weights.bce_loss_weight)

    def new_meter(self, device: torch.device, split: str, keep_examples: bool) -> SegmentationMeter:
        return SegmentationMeter(
            device, find_nodules=split == "val", n_examples=N_EXAMPLE_IMAGES if keep_examples else 0
        )

    def record(self, meter: SegmentationMeter, outputs: torch.Tensor, batch: Batch, losses: torch.Tensor) -> None:
        predicted = outputs > self.config.segmentation.seg_threshold
        labels = batch.targets > 0.5
        meter.update(predicted, labels, losses)
        if meter.find_nodules:
            self._find_nodules(meter, predicted, batch)
        missing = meter.n_examples - len(meter.examples)
        if missing > 0:  # slices with nodule, the middle channel is the labelled slice
            middle = batch.inputs.shape[1] // 2
            for k in torch.nonzero(labels.flatten(1).any(dim=1)).flatten().tolist()[:missing]:
                meter.examples.append(
                    (batch.inputs[k, middle].float().cpu(), labels[k, 0].cpu(), predicted[k, 0].cpu())
                )

    def _find_nodules(self, meter: SegmentationMeter, predicted: torch.Tensor, batch: Batch) -> None:
        """Mark the validation nodules that a predicted mask touches (whole slices: rows and cols
        of the slice are volume voxels)."""
        uids, slice_indices = batch.meta
        for k, (uid, slice_index) in enumerate(zip(uids, slice_indices.tolist())):
            for n, mask in enumerate(self._val_nodule_masks.get(uid, ())):
                if (uid, n) in meter.nodules_found or not mask.start_irc[0] <= slice_index < mask.stop_irc[0]:
                    continue
                (_, r0, c0), (_, r1, c1) = mask.start_irc, mask.stop_irc
                window = predicted[k, 0, r0:r1, c0:c1].cpu().numpy()
                if (window & mask.mask[slice_index - mask.start_irc[0]]).any():
                    meter.nodules_found.add((uid, n))

    def summarize(self, meter: SegmentationMeter, ctx: DistContext) -> tuple[dict[str, float], dict[str, Any]]:
        tp, fp, fn, loss_sum, n = all_reduce_sum(meter.totals, ctx).tolist()
        metrics = segmentation_metrics(tp, fp, fn, loss_sum, n)
        if meter.find_nodules:
            found = set().union(*all_gather_objects(meter.nodules_found, ctx))
            nodules = [(uid, k, d) for uid, ds in self._val_nodule_diameters.items() for k, d in enumerate(ds)]
            large = [(uid, k) for uid, k, d in nodules if d >= NODULE_RECALL_MIN_MM]
            metrics["nodule_recall"] = len(found) / len(nodules) if nodules else float("nan")
            metrics["nodule_recall_4mm"] = sum(key in found for key in large) / len(large) if large else float("nan")
            metrics["nodules"] = float(len(nodules))
        return metrics, {"examples": meter.examples}


def _require_positives(n_positive: int, what: str, n_series: int, config: TrainConfig) -> None:
    """Refuse a validation split without positives: its metric is undefined, so no best.ckpt would ever be chosen."""
    if n_positive == 0:
        raise BadDataError(
            f"the validation split (every {config.val_stride}-th series: {n_series} series) holds no {what}, so "
            f"validation cannot be scored and no best.ckpt chosen; change --val-stride or add series"
        )


def make_task(config: TrainConfig) -> Task:
    return SegmentationTask(config) if config.task == "seg" else ClassifierTask(config)
