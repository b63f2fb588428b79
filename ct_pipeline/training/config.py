"""What a training run does: one frozen, validated :class:`TrainConfig` for all three apps.

The three apps share every option; only their defaults differ (:data:`TASK_DEFAULTS`, the
book's choices): the nodule classifier ("cls") and the malignancy classifier ("mal") use SGD
with momentum 0.99 on balanced 32x48x48 crops, the segmentation U-Net ("seg") Adam on 64x64
crops. ``TrainConfig.for_task("cls", data_roots=..., out_dir=...)`` fills them in.

Units and scopes: ``batch_size`` is per rank (the global batch is ``batch_size * world_size``);
``epoch_size`` counts training samples per epoch over all ranks; ``lr`` is used as given,
whatever the number of ranks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.errors import BadInputError
from ct_pipeline.precision import PRECISIONS

TASKS = ("cls", "mal", "seg")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
# The classifier's modules that hold parameters, input side first (the book's "blocks"):
# --finetune-depth N trains the last N of them.
CLASSIFIER_BLOCKS = ("tail_batchnorm", "block1", "block2", "block3", "block4", "head_linear")

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # book ch. 11-12: SGD lr 0.001 momentum 0.99, batch 32, balanced 1:1
    "cls": {"epoch_size": 20_000, "batch_size": 32, "optimizer": "sgd", "lr": 1e-3, "augmentation": AugmentationConfig()},
    # book ch. 14: fine-tuning uses lr 0.003
    "mal": {"epoch_size": 2_000, "batch_size": 32, "optimizer": "sgd", "lr": 3e-3, "augmentation": AugmentationConfig()},
    # book ch. 13: Adam (default lr), batch 16, its segmentation augmentation
    "seg": {
        "epoch_size": 3_000, "batch_size": 16, "optimizer": "adam", "lr": 1e-3,
        "augmentation": AugmentationConfig.book_segmentation(),
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in every checkpoint (as plain data).

    Attributes:
        task: "cls" (nodule vs non-nodule), "mal" (benign vs malignant) or "seg" (U-Net).
        data_roots: folders with the series and the LUNA16 CSVs.
        out_dir: the run's folder: ``last.ckpt``, ``best.ckpt``, ``tensorboard/``.
        cache_dir: crop cache folder (None: $CT_CACHE_DIR or the default).
        run_name: label in logs and TensorBoard ("" = the out folder's name).
        epochs: epochs to train in all (a resumed run continues up to this number).
        epoch_size: training samples per epoch over all ranks.
        batch_size: samples per optimizer step on each rank.
        num_workers: DataLoader worker processes per rank (0 = load in the training process).
        threads: CPU threads per rank, workers included (one each); None: the allocation
            (:func:`ct_pipeline.threads.thread_budget`).
        optimizer: "sgd" (with ``momentum``) or "adam".
        lr: learning rate, not scaled with the number of ranks.
        momentum: SGD momentum (the book's 0.99).
        weight_decay: L2 penalty (0 = off, the book's).
        balance_ratio: classifier epochs hold this many negatives (or benign) per positive;
            0 draws unbalanced.
        augmentation: random augmentation of training batches (``AugmentationConfig.off()``: none).
        seed: fixes initial weights, sample order and augmentation (with the epoch and rank).
        device: "auto" (cuda when available), "cpu" or "cuda".
        precision: "fp32", "bf16" or "fp16" autocast; "auto": bf16 where it trains faster
            (GPUs with bf16, CPUs with AMX), else fp32.
        channels_last: train in channels-last memory format (faster convolutions on CPU and GPU).
        resume: continue the run in ``out_dir`` from its ``last.ckpt``.
        val_every: validate every N epochs (and always after the last one).
        val_stride: every N-th series (sorted by UID) is validation.
        finetune: "mal" only: a nodule-classifier checkpoint to start from.
        block_batchnorm: "cls": the classifier with a BatchNorm after every convolution (not the
            book's shape; trains in far fewer steps). A "mal" fine-tune takes its source's shape.
        centre_head: "cls": the classifier's head also sees the central cells of blocks 2 and 3
            (not the book's shape; learns from far fewer samples). A "mal" fine-tune takes its
            source's shape.
        finetune_depth: with ``finetune``, train the last N parameter blocks (1 = the head only);
            the others stay frozen.
        fn_loss_weight: "seg": weight of the false-negative Dice term (the book's 8).
        bce_loss_weight: "seg": weight of a per-pixel binary cross-entropy term added to the Dice
            terms (0: the book's loss). Dice alone gives almost no gradient to background pixels
            while the mask covers everything, so a little cross-entropy makes the model selective sooner.
        seg_threshold: "seg": probability above which a pixel counts as nodule.
        background_share: "seg": share of training crops centred on non-nodule candidates instead
            of nodules (0: the book's); see ``SegmentationDatasetConfig.background_share``.
        exclude_series: series left out of training and validation (``--exclude-series FILE``),
            e.g. unreadable ones; the split is made as if they were there.
        extra_candidates: "cls": more candidate files (``candidates.csv`` format) whose non-nodule
            rows are negatives too, e.g. ``ct hard-negatives``' output (``--extra-candidates``).
    """

    task: str
    data_roots: tuple[Path, ...]
    out_dir: Path
    cache_dir: Path | None = None
    run_name: str = ""
    epochs: int = 1
    epoch_size: int = 20_000
    batch_size: int = 32
    num_workers: int = 1
    threads: int | None = None
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.99
    weight_decay: float = 0.0
    balance_ratio: float = 1.0
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    resume: bool = False
    val_every: int = 1
    val_stride: int = 10
    finetune: Path | None = None
    finetune_depth: int = 1
    block_batchnorm: bool = False
    centre_head: bool = False
    fn_loss_weight: float = 8.0
    bce_loss_weight: float = 0.0
    seg_threshold: float = 0.5
    background_share: float = 0.0
    exclude_series: tuple[str, ...] = ()
    extra_candidates: tuple[Path, ...] = ()

    @classmethod
    def for_task(cls, task: str, **options: Any) -> TrainConfig:
        """A config with ``task``'s defaults (:data:`TASK_DEFAULTS`), overridden by ``options``."""
        if task not in TASKS:
            raise BadInputError(f"task {task!r} is not one of {', '.join(TASKS)}")
        return cls(task=task, **{**TASK_DEFAULTS[task], **options})

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_roots", tuple(Path(p) for p in self.data_roots))
        object.__setattr__(self, "exclude_series", tuple(sorted(set(self.exclude_series))))
        object.__setattr__(self, "extra_candidates", tuple(Path(p) for p in self.extra_candidates))
        for path in self.extra_candidates:
            if not path.is_file():
                raise BadInputError(f"--extra-candidates {path}: no such file")
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.finetune is not None:
            object.__setattr__(self, "finetune", Path(self.finetune))
        if not self.run_name:
            object.__setattr__(self, "run_name", self.out_dir.name or "run")
        self._check_choices()
        self._check_numbers()
        if self.finetune is not None and self.task != "mal":
            raise BadInputError(
                f"--finetune {self.finetune} starts a malignancy model from a nodule model; add --malignancy"
            )
        if self.finetune is not None:
            from ct_pipeline.models.checkpoint_path import checkpoint_file  # torch: imported when used

            checkpoint_file(self.finetune, "--finetune")
        if not self.data_roots:
            raise BadInputError("no data roots: pass --data-root DIR or set CT_DATA_ROOT")

    def _check_choices(self) -> None:
        for name, allowed in (
            ("task", TASKS), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS), ("device", DEVICES)
        ):
            value = getattr(self, name)
            if value not in allowed:
                option = name if name == "task" else f"--{name}"  # the task is chosen by the command
                raise BadInputError(f"{option} {value!r} is not one of {', '.join(allowed)}")
        if self.precision == "fp16" and self.device == "cpu":
            raise BadInputError("--precision fp16 is for GPUs; on the CPU use fp32 or bf16")

    def _check_numbers(self) -> None:
        positive_ints = ("epochs", "epoch_size", "batch_size", "val_every")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"--{name.replace('_', '-')} {value!r}: expected a whole number >= 1")
        if self.num_workers < 0:
            raise BadInputError(f"--num-workers {self.num_workers}: expected 0 (load in-process) or more")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise BadInputError(f"--threads {self.threads!r}: expected a whole number of CPU threads >= 1")
        if self.val_stride < 2:
            raise BadInputError(f"--val-stride {self.val_stride}: expected 2 or more (every N-th series is validation)")
        if not 0 <= self.seed < 2**63:
            raise BadInputError(f"--seed {self.seed}: expected a whole number from 0 to 2**63 - 1")
        finite_ranges = (
            ("lr", self.lr, 0.0, 10.0, False),
            ("momentum", self.momentum, 0.0, 1.0, True),
            ("weight_decay", self.weight_decay, 0.0, 1.0, True),
            ("balance_ratio", self.balance_ratio, 0.0, 1000.0, True),
            ("fn_loss_weight", self.fn_loss_weight, 0.0, 1000.0, True),
            ("bce_loss_weight", self.bce_loss_weight, 0.0, 1000.0, True),
            ("seg_threshold", self.seg_threshold, 0.0, 1.0, False),
            ("background_share", self.background_share, 0.0, 0.99, True),
        )
        for name, value, low, high, low_ok in finite_ranges:
            ok = math.isfinite(value) and (low <= value if low_ok else low < value) and value <= high
            if not ok:
                bound = "from" if low_ok else "above"
                raise BadInputError(f"--{name.replace('_', '-')} {value}: expected a number {bound} {low} up to {high}")
        if not 1 <= self.finetune_depth <= len(CLASSIFIER_BLOCKS):
            raise BadInputError(
                f"--finetune-depth {self.finetune_depth}: expected 1 (head only) to {len(CLASSIFIER_BLOCKS)} "
                f"(all of {', '.join(CLASSIFIER_BLOCKS)})"
            )

    @property
    def kind(self) -> str:
        """The checkpoint kind the run writes ("cls", "mal" or "seg")."""
        return self.task

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# Options that may differ between a run and its resumption without changing what it computes
# (or that only say where things are); every other difference refuses to resume.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "num_workers", "threads", "resume", "out_dir", "cache_dir", "data_roots", "run_name", "val_every", "device"}
)
