"""What a training run does: one frozen, validated :class:`TrainConfig` for all three apps.

A config is the options every run shares (data, epochs, batch, optimizer, seed, device,
precision, threads, workers, resume, validation), then one section per owner, each read only by
what uses it:

- ``augmentation``   -- :class:`~ct_pipeline.datasets.AugmentationConfig`, the batches' random changes;
- ``segmentation``   -- :class:`SegmentationTraining`, the U-Net's loss and pixel threshold ("seg");
- ``classification`` -- :class:`ClassificationTraining`, the classifier's sampling and shape ("cls", "mal");
- ``malignancy``     -- :class:`MalignancyTraining`, the fine-tune from a nodule model ("mal").

Every default is written once, here: in the field defaults, and for what differs per task in
:class:`TaskDefaults` (the book's choices: the nodule classifier "cls" and the malignancy
classifier "mal" use SGD with momentum 0.99 on balanced 32x48x48 crops, the U-Net "seg" Adam on
64x64 crops). ``TrainConfig.for_task("cls", data_roots=..., out_dir=...)`` fills those in.

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

from ct_pipeline.crops import check_crop_spacing
from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.errors import BadInputError
from ct_pipeline.precision import PRECISIONS

TASKS = ("cls", "mal", "seg")
OPTIMIZERS = ("sgd", "adam")
# The classifier's modules that hold parameters, input side first (the book's "blocks"):
# --finetune-depth N trains the last N of them.
CLASSIFIER_BLOCKS = ("tail_batchnorm", "block1", "block2", "block3", "block4", "head_linear")
# The sections of a TrainConfig whose fields checkpoints written before them stored flat.
SECTIONS = ("segmentation", "classification", "malignancy")


def _check_range(name: str, value: float, low: float, high: float, low_ok: bool = True) -> None:
    """Refuse ``value`` outside [low, high] (or (low, high] without ``low_ok``), or not finite."""
    ok = math.isfinite(value) and (low <= value if low_ok else low < value) and value <= high
    if not ok:
        bound = "from" if low_ok else "above"
        raise BadInputError(f"--{name.replace('_', '-')} {value}: expected a number {bound} {low} up to {high}")


@dataclass(frozen=True)
class SegmentationTraining:
    """What only the U-Net run ("seg") reads.

    Attributes:
        fn_loss_weight: weight of the false-negative Dice term (the book's 8).
        bce_loss_weight: weight of a per-pixel binary cross-entropy term added to the Dice terms
            (0: the book's loss). Dice alone gives almost no gradient to background pixels while
            the mask covers everything, so a little cross-entropy makes the model selective sooner.
        seg_threshold: probability above which a pixel counts as nodule (the metrics').
        background_share: share of training crops centred on non-nodule candidates instead of
            nodules (0: the book's); see ``SegmentationDatasetConfig.background_share``.
    """

    fn_loss_weight: float = 8.0
    bce_loss_weight: float = 0.0
    seg_threshold: float = 0.5
    background_share: float = 0.0

    def __post_init__(self) -> None:
        _check_range("fn_loss_weight", self.fn_loss_weight, 0.0, 1000.0)
        _check_range("bce_loss_weight", self.bce_loss_weight, 0.0, 1000.0)
        _check_range("seg_threshold", self.seg_threshold, 0.0, 1.0, low_ok=False)
        _check_range("background_share", self.background_share, 0.0, 0.99)


@dataclass(frozen=True)
class ClassificationTraining:
    """What only the classifier runs read ("cls"; "mal" where said).

    Attributes:
        balance_ratio: "cls" and "mal": training epochs hold this many negatives (or benign) per
            positive; 0 draws unbalanced.
        block_batchnorm: the classifier with a BatchNorm after every convolution (not the book's
            shape; trains in far fewer steps). A "mal" fine-tune takes its source's shape.
        centre_head: the classifier's head also sees the central cells of blocks 2 and 3 (not the
            book's shape; learns from far fewer samples). A "mal" fine-tune takes its source's shape.
        extra_candidates: more candidate files (``candidates.csv`` format) whose non-nodule rows
            are negatives too, e.g. ``ct hard-negatives``' output (``--extra-candidates``).
        own_candidates: "cls": the pipeline's own candidates on the training series with labels
            (``ct hard-negatives --with-positives``); a pool of their own, never mixed into the
            ``candidates.csv`` pools (``--own-candidates``).
        own_share: "cls": fraction of each training epoch's items drawn from ``own_candidates``,
            spread evenly so every batch holds it (0: none, today's draw exactly).
        own_positive_share: fraction of those own draws that are positives (oversampled: the
            mined files hold a few hits per series against hundreds of false positives).
        crop_spacing_mm: the crops' voxel spacing (index, row, col) in mm, resampled from each
            series' grid (``--crop-spacing``); None: native voxels (the book's); "auto": the
            median slice spacing and median pixel spacing of the training series, as nnU-Net
            picks its spacing. The checkpoint's model config records the spacing used. A "mal"
            fine-tune takes its source's spacing.
    """

    balance_ratio: float = 1.0
    block_batchnorm: bool = False
    centre_head: bool = False
    extra_candidates: tuple[Path, ...] = ()
    own_candidates: tuple[Path, ...] = ()
    own_share: float = 0.0
    own_positive_share: float = 0.5
    crop_spacing_mm: tuple[float, float, float] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_candidates", tuple(Path(p) for p in self.extra_candidates))
        object.__setattr__(self, "own_candidates", tuple(Path(p) for p in self.own_candidates))
        object.__setattr__(self, "crop_spacing_mm", parse_crop_spacing(self.crop_spacing_mm))
        _check_range("balance_ratio", self.balance_ratio, 0.0, 1000.0)
        _check_range("own_share", self.own_share, 0.0, 1.0)
        _check_range("own_positive_share", self.own_positive_share, 0.0, 1.0)
        # Either alone would be silently ignored: a measurement of nothing.
        if self.own_share > 0 and not self.own_candidates:
            raise BadInputError(
                f"--own-share {self.own_share:g} draws from the pipeline's own candidates; "
                "add --own-candidates FILE (`ct hard-negatives --with-positives` writes it)"
            )
        if self.own_candidates and self.own_share == 0:
            raise BadInputError(
                f"--own-candidates {self.own_candidates[0]} is only read with --own-share above 0; set one, e.g. 0.25"
            )


CROP_SPACING_WORDS = ("native", "auto")


def parse_crop_spacing(value: Any) -> tuple[float, float, float] | str | None:
    """``--crop-spacing`` as the config holds it: None (native), "auto", or 3 floats (z, y, x) in mm.

    Takes "native", "auto", "Z,Y,X" or a sequence of 3 numbers.

    Raises:
        BadInputError: anything else, in one line.
    """
    if value is None or value == "native":
        return None
    if value == "auto":
        return value
    try:
        return check_crop_spacing(value.split(",") if isinstance(value, str) else value)
    except BadInputError as err:
        raise BadInputError(
            f"--crop-spacing {crop_spacing_text(value)}: expected native, auto or 3 spacings Z,Y,X from 0.1 to "
            "20 mm, e.g. 1.5,0.7,0.7"
        ) from err


def crop_spacing_text(value: Any) -> str:
    """``--crop-spacing``'s text for a config value (the inverse of :func:`parse_crop_spacing`)."""
    if value is None:
        return "native"
    if isinstance(value, str):
        return value
    try:
        return ",".join(f"{float(v):g}" if float(f"{float(v):g}") == float(v) else repr(float(v)) for v in value)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class MalignancyTraining:
    """What only the malignancy run ("mal") reads.

    Attributes:
        finetune: a nodule-classifier checkpoint to start from (None: fresh weights).
        finetune_depth: with ``finetune``, train the last N parameter blocks (1 = the head only);
            the others stay frozen.
    """

    finetune: Path | None = None
    finetune_depth: int = 1

    def __post_init__(self) -> None:
        if self.finetune is not None:
            object.__setattr__(self, "finetune", Path(self.finetune))
        if not 1 <= self.finetune_depth <= len(CLASSIFIER_BLOCKS):
            raise BadInputError(
                f"--finetune-depth {self.finetune_depth}: expected 1 (head only) to {len(CLASSIFIER_BLOCKS)} "
                f"(all of {', '.join(CLASSIFIER_BLOCKS)})"
            )


@dataclass(frozen=True)
class TaskDefaults:
    """The options whose defaults differ between the tasks (the book's choices)."""

    epoch_size: int
    batch_size: int
    optimizer: str
    lr: float
    augmentation: AugmentationConfig

    @classmethod
    def nodule(cls) -> TaskDefaults:
        """Book ch. 11-12: SGD lr 0.001 momentum 0.99, batch 32, balanced 1:1."""
        return cls(epoch_size=20_000, batch_size=32, optimizer="sgd", lr=1e-3, augmentation=AugmentationConfig())

    @classmethod
    def malignancy(cls) -> TaskDefaults:
        """Book ch. 14: fine-tuning uses lr 0.003, on the fewer annotated nodules."""
        return cls(epoch_size=2_000, batch_size=32, optimizer="sgd", lr=3e-3, augmentation=AugmentationConfig())

    @classmethod
    def segmentation(cls) -> TaskDefaults:
        """Book ch. 13: Adam (its default lr), batch 16, its segmentation augmentation."""
        return cls(
            epoch_size=3_000,
            batch_size=16,
            optimizer="adam",
            lr=1e-3,
            augmentation=AugmentationConfig.book_segmentation(),
        )

    @classmethod
    def of(cls, task: str) -> TaskDefaults:
        """``task``'s defaults ("cls", "mal" or "seg")."""
        if task not in TASKS:
            raise BadInputError(f"task {task!r} is not one of {', '.join(TASKS)}")
        return {"cls": cls.nodule, "mal": cls.malignancy, "seg": cls.segmentation}[task]()


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in every checkpoint (as plain data).

    Attributes:
        task: "cls" (nodule vs non-nodule), "mal" (benign vs malignant) or "seg" (U-Net).
        data_roots: folders with the series and the LUNA16 CSVs.
        out_dir: the run's folder: ``last.ckpt``, ``best.ckpt``, ``tensorboard/``.
        epoch_size: training samples per epoch over all ranks (:class:`TaskDefaults`).
        batch_size: samples per optimizer step on each rank (:class:`TaskDefaults`).
        optimizer: "sgd" (with ``momentum``) or "adam" (:class:`TaskDefaults`).
        lr: learning rate, not scaled with the number of ranks (:class:`TaskDefaults`).
        augmentation: random augmentation of training batches (``AugmentationConfig.off()``:
            none; :class:`TaskDefaults`).
        cache_dir: crop cache folder (None: $CT_CACHE_DIR or the default).
        run_name: label in logs and TensorBoard ("" = the out folder's name).
        epochs: epochs to train in all (a resumed run continues up to this number).
        workers: DataLoader worker processes per rank (0 = load in the training process).
        threads: CPU threads per rank, workers included (one each); None: the allocation
            (:func:`ct_pipeline.threads.thread_budget`).
        momentum: SGD momentum (the book's 0.99).
        weight_decay: L2 penalty (0 = off, the book's).
        seed: fixes initial weights, sample order and augmentation (with the epoch and rank).
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:N" or "mps"; checked when
            the run starts (:func:`ct_pipeline.devices.resolve_device`).
        precision: "fp32", "bf16" or "fp16" autocast; "auto": bf16 where it trains faster
            (GPUs with bf16, CPUs with AMX), else fp32.
        channels_last: train in channels-last memory format (faster convolutions on CPU and GPU).
        resume: continue the run in ``out_dir`` from its ``last.ckpt``.
        val_every: validate every N epochs (and always after the last one).
        val_stride: every N-th series (sorted by UID) is validation.
        exclude_series: series left out of training and validation (``--exclude-series FILE``),
            e.g. unreadable ones; the split is made as if they were there.
        segmentation, classification, malignancy: the sections only those tasks read.
    """

    task: str
    data_roots: tuple[Path, ...]
    out_dir: Path
    epoch_size: int
    batch_size: int
    optimizer: str
    lr: float
    augmentation: AugmentationConfig
    cache_dir: Path | None = None
    run_name: str = ""
    epochs: int = 10
    workers: int = 1
    threads: int | None = None
    momentum: float = 0.99
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    resume: bool = False
    val_every: int = 1
    val_stride: int = 10
    exclude_series: tuple[str, ...] = ()
    segmentation: SegmentationTraining = field(default_factory=SegmentationTraining)
    classification: ClassificationTraining = field(default_factory=ClassificationTraining)
    malignancy: MalignancyTraining = field(default_factory=MalignancyTraining)

    @classmethod
    def for_task(cls, task: str, **options: Any) -> TrainConfig:
        """A config with ``task``'s defaults (:class:`TaskDefaults`), overridden by ``options``."""
        defaults = TaskDefaults.of(task)
        per_task = {field.name: getattr(defaults, field.name) for field in dataclasses.fields(defaults)}
        return cls(task=task, **{**per_task, **options})

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_roots", tuple(Path(p) for p in self.data_roots))
        object.__setattr__(self, "exclude_series", tuple(sorted(set(self.exclude_series))))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if not self.run_name:
            object.__setattr__(self, "run_name", self.out_dir.name or "run")
        self._check_choices()
        self._check_numbers()
        finetune = self.malignancy.finetune
        if finetune is not None and self.task != "mal":
            raise BadInputError(
                f"--finetune {finetune} starts a malignancy model from a nodule model; add --malignancy"
            )
        if self.classification.own_share > 0 and self.task != "cls":
            raise BadInputError(
                "--own-share trains the nodule classifier on the pipeline's own candidates; leave it out with --malignancy"
            )
        if not self.data_roots:
            raise BadInputError("no data roots: pass --data-root DIR or set CT_DATA_ROOT")

    def _check_choices(self) -> None:
        for name, allowed in (("task", TASKS), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS)):
            value = getattr(self, name)
            if value not in allowed:
                option = name if name == "task" else f"--{name}"  # the task is chosen by the command
                raise BadInputError(f"{option} {value!r} is not one of {', '.join(allowed)}")
        if not isinstance(self.device, str) or not self.device:
            raise BadInputError(f"--device {self.device!r} is not a device; use cpu, cuda, cuda:N, mps or auto")
        if self.precision == "fp16" and self.device == "cpu":
            raise BadInputError("--precision fp16 is for GPUs; on the CPU use fp32 or bf16")

    def _check_numbers(self) -> None:
        for name in ("epochs", "epoch_size", "batch_size", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"--{name.replace('_', '-')} {value!r}: expected a whole number >= 1")
        if self.workers < 0:
            raise BadInputError(f"--workers {self.workers}: expected 0 (load in-process) or more")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise BadInputError(f"--threads {self.threads!r}: expected a whole number of CPU threads >= 1")
        if self.val_stride < 2:
            raise BadInputError(f"--val-stride {self.val_stride}: expected 2 or more (every N-th series is validation)")
        if not 0 <= self.seed < 2**63:
            raise BadInputError(f"--seed {self.seed}: expected a whole number from 0 to 2**63 - 1")
        _check_range("lr", self.lr, 0.0, 10.0, low_ok=False)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)

    @property
    def kind(self) -> str:
        """The checkpoint kind the run writes ("cls", "mal" or "seg")."""
        return self.task

    def check_inputs_exist(self) -> None:
        """Refuse a run whose input files are missing. Not on construction: a config may describe
        a run whose inputs an earlier run writes (the recipe's fine-tune, its hard negatives).

        Raises:
            BadInputError, NotFoundError: naming the option and the file.
        """
        for path in self.classification.extra_candidates:
            if not path.is_file():
                raise BadInputError(f"--extra-candidates {path}: no such file")
        for path in self.classification.own_candidates:
            if not path.is_file():
                raise BadInputError(f"--own-candidates {path}: no such file")
        if self.malignancy.finetune is not None:
            from ct_pipeline.models.checkpoint_path import checkpoint_file  # torch: imported when used

            checkpoint_file(self.malignancy.finetune, "--finetune")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def flat_fields(plain: dict[str, Any]) -> dict[str, Any]:
    """A config's plain data (``to_plain_data(config)``) with its sections' fields lifted to the top,
    as checkpoints written before the sections stored them: so old and new runs compare alike."""
    flat = {key: value for key, value in plain.items() if key not in SECTIONS}
    for section in SECTIONS:
        flat.update(plain.get(section) or {})
    return flat


# Options that may differ between a run and its resumption without changing what it computes
# (or that only say where things are); every other difference refuses to resume.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "workers", "threads", "resume", "out_dir", "cache_dir", "data_roots", "run_name", "val_every", "device"}
)
