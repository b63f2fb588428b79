"""`ct train-cls` and `ct train-seg`: list the options, build a TrainConfig, call the loop.

Both commands take the same shared options (they share one loop) and their task's section.
Every default, and every default the help shows, is the library's: the fields of
``ct_pipeline.training.TrainConfig`` and its sections, and ``TaskDefaults`` for what differs per
task (an option of ``train-cls`` left unset means "the task's default", which --malignancy changes).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.options import RESOURCES_PANEL, CacheDirOption, DataRootsOption, DeviceOption, Precision
from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.paths import resolve_data_roots
from ct_pipeline.training.config import (
    OPTIMIZERS,
    ClassificationTraining,
    MalignancyTraining,
    SegmentationTraining,
    TaskDefaults,
    TrainConfig,
    crop_spacing_text,
)

RUN, OPTIMIZER, AUGMENT = "Run", "Optimizer", "Augmentation"

SCOPE_NOTE = (
    "--batch-size is per process (rank): with torchrun --nproc-per-node=N the global batch is N x batch-size. "
    "--epoch-size counts samples over all ranks. --lr is used as given, whatever N."
)

OptimizerName = enum.Enum("OptimizerName", [(name, name) for name in OPTIMIZERS], type=str)
# The per-task defaults as the help shows them: read from the library, never retyped here.
NODULE, MALIGNANCY, SEGMENTATION = TaskDefaults.nodule(), TaskDefaults.malignancy(), TaskDefaults.segmentation()
SEGMENTATION_OPTIMIZER = OptimizerName(SEGMENTATION.optimizer)


def _option(name: str, help: str, panel: str, shown: str | bool = True, **extra: Any) -> Any:
    """A typer option in ``panel``; ``shown`` is the default as displayed (text for task-dependent ones)."""
    return typer.Option(name, help=help, rich_help_panel=panel, show_default=shown, **extra)


def _flag(name: str, help: str, panel: str) -> Any:
    """An on/off option: no value, so no type in the help (metavar "")."""
    return typer.Option(name, help=help, rich_help_panel=panel, metavar="")


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cls_default(read: Callable[[TaskDefaults], Any]) -> str:
    """The default of a task-dependent `train-cls` option, as its help shows it."""
    nodule, malignancy = _shown(read(NODULE)), _shown(read(MALIGNANCY))
    return nodule if nodule == malignancy else f"{nodule}; {malignancy} with --malignancy"


# -- options both commands share ---------------------------------------------------------------
OutOption = Annotated[
    Path | None,
    _option(
        "--out", "The run's folder: last.ckpt, best.ckpt, tensorboard/.", RUN, "runs/train-<kind>", file_okay=False
    ),
]
RunNameOption = Annotated[str, _option("--run-name", "Label in logs (default: the --out folder's name).", RUN, False)]
EpochsOption = Annotated[int, _option("--epochs", "Epochs in all (a resumed run continues up to this).", RUN)]
ValEveryOption = Annotated[int, _option("--val-every", "Validate every N epochs (and after the last).", RUN)]
ValStrideOption = Annotated[int, _option("--val-stride", "Every N-th series (sorted by UID) is validation.", RUN)]
ResumeOption = Annotated[
    bool, _flag("--resume", "Continue the run in --out from its last.ckpt (same options; --epochs may grow).", RUN)
]
SeedOption = Annotated[int, _option("--seed", "Fixes initial weights, sample order and augmentation.", RUN)]
MomentumOption = Annotated[float, _option("--momentum", "SGD momentum.", OPTIMIZER)]
WeightDecayOption = Annotated[float, _option("--weight-decay", "L2 penalty (0: off).", OPTIMIZER)]
NoAugmentOption = Annotated[bool, _flag("--no-augment", "Switch every augmentation off.", AUGMENT)]
MirrorOption = Annotated[bool, _flag("--aug-mirror/--no-aug-mirror", "Random flips of each spatial axis.", AUGMENT)]
PrecisionOption = Annotated[
    Precision,
    _option(
        "--precision",
        "Autocast precision. auto: bf16 on GPUs with bf16 and on CPUs with AMX, else fp32 (without AMX, "
        "bf16 training is slower than fp32 on the CPU). fp16: GPUs only.",
        RESOURCES_PANEL,
    ),
]
ChannelsLastOption = Annotated[
    bool,
    _flag("--channels-last/--no-channels-last", "Channels-last memory format (faster convolutions).", RESOURCES_PANEL),
]
WorkersOption = Annotated[
    int,
    _option("--workers", "DataLoader processes per rank (0: load in the training process).", RESOURCES_PANEL),
]
# The option's name before `--workers` meant DataLoader processes in every command; kept for old scripts.
NumWorkersAlias = Annotated[int | None, typer.Option("--num-workers", hidden=True)]
ExcludeSeriesOption = Annotated[
    Path | None,
    _option(
        "--exclude-series",
        "A text file of series UIDs (one per line, # comments) to leave out of training and validation, e.g. "
        "the unreadable ones a refused run listed in OUT/unreadable-series.txt.",
        RUN,
        False,
        dir_okay=False,
    ),
]
ThreadsOption = Annotated[
    int | None,
    _option(
        "--threads",
        "CPU threads per rank (--workers processes run one each beside them). Default: the allocation "
        "(OMP_NUM_THREADS, else the least of SLURM_CPUS_PER_TASK, the cgroup quota and the CPU affinity).",
        RESOURCES_PANEL,
        False,
        min=1,
    ),
]
OPTIMIZER_HELP = "sgd (with --momentum) or adam."
LR_HELP = "Learning rate (not scaled with the number of ranks)."
# (option, help, AugmentationConfig field): the --aug-* options that take a number, in the order
# both commands list them.
AUG_HELP = (
    ("--aug-shift", "Largest shift, fraction of half the side (0: off).", "shift_fraction"),
    ("--aug-scale", "Largest magnification change, fraction (0: off).", "scale_fraction"),
    ("--aug-rotate", "Largest rotation about the slice axis, degrees (0: off).", "rotation_deg"),
    ("--aug-noise", "Gaussian noise standard deviation, HU (0: off).", "noise_hu"),
    (
        "--aug-noise-max",
        "Draw each sample's noise standard deviation from --aug-noise up to this, HU (0: off, a fixed one).",
        "noise_max_hu",
    ),
    ("--aug-hu-scale", "Largest HU calibration slope change, fraction: HU x (1 +- s) (0: off).", "hu_scale_fraction"),
    ("--aug-hu-offset", "Largest HU calibration offset, HU (0: off).", "hu_offset_hu"),
    (
        "--aug-kernel-probability",
        "Probability that a sample's reconstruction kernel is changed (with --aug-blur or --aug-sharpen).",
        "kernel_probability",
    ),
    ("--aug-blur", "Largest in-plane Gaussian blur (soft kernel), SD in voxels (0: off).", "blur_sigma_max_vox"),
    ("--aug-sharpen", "Largest in-plane unsharp-mask amount (sharp kernel) (0: off).", "sharpen_amount_max"),
)
_CLS_AUG = {
    field: _option(name, text, AUGMENT, _cls_default(lambda d, f=field: getattr(d.augmentation, f)))
    for name, text, field in AUG_HELP
}
_SEG_AUG = {field: _option(name, text, AUGMENT) for name, text, field in AUG_HELP}


def _given(value: Any, default: Any) -> Any:
    """An option's value, or the task's default where it was left unset."""
    return default if value is None else value.value if isinstance(value, enum.Enum) else value


def _augmentation(base: AugmentationConfig, off: bool, mirror: bool, **numbers: float | None) -> AugmentationConfig:
    """The run's augmentation: ``numbers`` by AugmentationConfig field, None where left unset."""
    if off:
        return AugmentationConfig.off()
    return AugmentationConfig(
        mirror=mirror, **{field: _given(value, getattr(base, field)) for field, value in numbers.items()}
    )


def _workers(workers: int, old_name: int | None) -> int:
    if old_name is None:
        return workers
    typer.echo("warning: --num-workers is now called --workers; the old name will go", err=True)
    return old_name


def _excluded(path: Path | None) -> tuple[str, ...]:
    from ct_pipeline.paths import read_series_list

    return () if path is None else tuple(read_series_list(path, "--exclude-series"))


def _out(out: Path | None, task: str) -> Path:
    return out or Path("runs") / f"train-{task}"


def _run(config: TrainConfig) -> None:
    """Train, print where the results are."""
    from ct_pipeline.training import train

    result = train(config)
    if result.best_epoch:
        typer.echo(
            f"best val {result.best_metric} {result.best_value:.4f} at epoch {result.best_epoch}: {result.best_checkpoint}"
        )
    typer.echo(f"last: {result.last_checkpoint} ({result.epochs} epochs, {result.samples_seen:,} samples)")


def train_cls(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    out: OutOption = None,
    run_name: RunNameOption = TrainConfig.run_name,
    malignancy: Annotated[
        bool,
        _flag("--malignancy", "Train benign vs malignant on annotated nodules instead of nodule vs non-nodule.", RUN),
    ] = False,
    finetune: Annotated[
        Path | None,
        _option(
            "--finetune",
            "With --malignancy: start from this nodule-classifier checkpoint, new head.",
            RUN,
            False,
            dir_okay=False,
        ),
    ] = MalignancyTraining.finetune,
    finetune_depth: Annotated[
        int,
        _option(
            "--finetune-depth", "With --finetune: train the last N blocks (1: head only; 2: + block4; ... 6: all).", RUN
        ),
    ] = MalignancyTraining.finetune_depth,
    block_batchnorm: Annotated[
        bool,
        _flag(
            "--block-batchnorm",
            "A BatchNorm after every convolution: not the book's shape, but it learns in far "
            "fewer steps (a --finetune keeps its source's shape).",
            RUN,
        ),
    ] = ClassificationTraining.block_batchnorm,
    centre_head: Annotated[
        bool,
        _flag(
            "--centre-head",
            "The head also sees the central cells of blocks 2 and 3: not the book's shape, but "
            "it learns from far fewer samples (a --finetune keeps its source's shape).",
            RUN,
        ),
    ] = ClassificationTraining.centre_head,
    crop_spacing: Annotated[
        str,
        _option(
            "--crop-spacing",
            "The crops' voxel spacing in mm, Z,Y,X (e.g. 1.5,0.7,0.7), resampled from each series: the "
            "classifier then sees millimetres, not voxels. auto: the training series' median slice and pixel "
            "spacing. native: each series' own voxels (the book's). A --finetune keeps its source's.",
            RUN,
            metavar="<Z,Y,X|auto|native>",
        ),
    ] = crop_spacing_text(ClassificationTraining.crop_spacing_mm),
    epochs: EpochsOption = TrainConfig.epochs,
    epoch_size: Annotated[
        int | None,
        _option(
            "--epoch-size", "Training samples per epoch, over all ranks.", RUN, _cls_default(lambda d: d.epoch_size)
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        _option("--batch-size", "Samples per step on EACH rank.", RUN, _cls_default(lambda d: d.batch_size)),
    ] = None,
    balance_ratio: Annotated[
        float,
        _option(
            "--balance-ratio", "Negatives (benign) per positive (malignant) in training epochs; 0: unbalanced.", RUN
        ),
    ] = ClassificationTraining.balance_ratio,
    val_every: ValEveryOption = TrainConfig.val_every,
    val_stride: ValStrideOption = TrainConfig.val_stride,
    resume: ResumeOption = TrainConfig.resume,
    seed: SeedOption = TrainConfig.seed,
    optimizer: Annotated[
        OptimizerName | None, _option("--optimizer", OPTIMIZER_HELP, OPTIMIZER, _cls_default(lambda d: d.optimizer))
    ] = None,
    lr: Annotated[float | None, _option("--lr", LR_HELP, OPTIMIZER, _cls_default(lambda d: d.lr))] = None,
    momentum: MomentumOption = TrainConfig.momentum,
    weight_decay: WeightDecayOption = TrainConfig.weight_decay,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = NODULE.augmentation.mirror,
    aug_shift: Annotated[float | None, _CLS_AUG["shift_fraction"]] = None,
    aug_scale: Annotated[float | None, _CLS_AUG["scale_fraction"]] = None,
    aug_rotate: Annotated[float | None, _CLS_AUG["rotation_deg"]] = None,
    aug_noise: Annotated[float | None, _CLS_AUG["noise_hu"]] = None,
    aug_noise_max: Annotated[float | None, _CLS_AUG["noise_max_hu"]] = None,
    aug_hu_scale: Annotated[float | None, _CLS_AUG["hu_scale_fraction"]] = None,
    aug_hu_offset: Annotated[float | None, _CLS_AUG["hu_offset_hu"]] = None,
    aug_kernel_probability: Annotated[float | None, _CLS_AUG["kernel_probability"]] = None,
    aug_blur: Annotated[float | None, _CLS_AUG["blur_sigma_max_vox"]] = None,
    aug_sharpen: Annotated[float | None, _CLS_AUG["sharpen_amount_max"]] = None,
    device: DeviceOption = TrainConfig.device,
    precision: PrecisionOption = Precision(TrainConfig.precision),
    channels_last: ChannelsLastOption = TrainConfig.channels_last,
    workers: WorkersOption = TrainConfig.workers,
    num_workers: NumWorkersAlias = None,
    threads: ThreadsOption = TrainConfig.threads,
    exclude_series: ExcludeSeriesOption = None,
    extra_candidates: Annotated[
        list[Path] | None,
        _option(
            "--extra-candidates",
            "More candidates.csv-format files whose class-0 rows are negatives too, e.g. "
            "`ct hard-negatives` output: the segmentation model's own false positives. Repeatable.",
            RUN,
            False,
            dir_okay=False,
        ),
    ] = None,
    own_candidates: Annotated[
        list[Path] | None,
        _option(
            "--own-candidates",
            "The pipeline's own candidates on the training series, with labels (`ct hard-negatives "
            "--with-positives` output): a pool of their own, drawn at --own-share. Repeatable.",
            RUN,
            False,
            dir_okay=False,
        ),
    ] = None,
    own_share: Annotated[
        float,
        _option(
            "--own-share",
            "Fraction of each training batch drawn from --own-candidates (0: none); the rest is the "
            "balanced draw over candidates.csv.",
            RUN,
        ),
    ] = ClassificationTraining.own_share,
    own_positive_share: Annotated[
        float,
        _option("--own-positive-share", "Fraction of the --own-share draws that are positives (oversampled).", RUN),
    ] = ClassificationTraining.own_positive_share,
) -> None:
    """Train the 3D nodule classifier (nodule vs non-nodule), or with --malignancy benign vs malignant.

    One line per epoch: loss, precision, recall, F1, ROC AUC, and the validation confusion counts.

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation ROC AUC; TensorBoard logs in OUT/tensorboard.
    """
    task = "mal" if malignancy else "cls"
    defaults = TaskDefaults.of(task)
    _run(
        TrainConfig(
            task=task,
            data_roots=tuple(resolve_data_roots(data_root)),
            out_dir=_out(out, task),
            cache_dir=cache_dir,
            run_name=run_name,
            epochs=epochs,
            epoch_size=_given(epoch_size, defaults.epoch_size),
            batch_size=_given(batch_size, defaults.batch_size),
            optimizer=_given(optimizer, defaults.optimizer),
            lr=_given(lr, defaults.lr),
            momentum=momentum,
            weight_decay=weight_decay,
            augmentation=_augmentation(
                defaults.augmentation,
                no_augment,
                aug_mirror,
                shift_fraction=aug_shift,
                scale_fraction=aug_scale,
                rotation_deg=aug_rotate,
                noise_hu=aug_noise,
                noise_max_hu=aug_noise_max,
                hu_scale_fraction=aug_hu_scale,
                hu_offset_hu=aug_hu_offset,
                kernel_probability=aug_kernel_probability,
                blur_sigma_max_vox=aug_blur,
                sharpen_amount_max=aug_sharpen,
            ),
            seed=seed,
            device=device,
            precision=precision.value,
            channels_last=channels_last,
            workers=_workers(workers, num_workers),
            threads=threads,
            resume=resume,
            val_every=val_every,
            val_stride=val_stride,
            exclude_series=_excluded(exclude_series),
            classification=ClassificationTraining(
                balance_ratio=balance_ratio,
                block_batchnorm=block_batchnorm,
                centre_head=centre_head,
                extra_candidates=tuple(extra_candidates or ()),
                own_candidates=tuple(own_candidates or ()),
                own_share=own_share,
                own_positive_share=own_positive_share,
                crop_spacing_mm=crop_spacing,
            ),
            malignancy=MalignancyTraining(finetune=finetune, finetune_depth=finetune_depth),
        )
    )


def train_seg(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    out: OutOption = None,
    run_name: RunNameOption = TrainConfig.run_name,
    epochs: EpochsOption = TrainConfig.epochs,
    epoch_size: Annotated[
        int, _option("--epoch-size", "Training crops per epoch, over all ranks.", RUN)
    ] = SEGMENTATION.epoch_size,
    batch_size: Annotated[int, _option("--batch-size", "Crops per step on EACH rank.", RUN)] = SEGMENTATION.batch_size,
    fn_loss_weight: Annotated[
        float,
        _option(
            "--fn-loss-weight",
            "Weight of the false-negative Dice term (book: 8): missing nodule pixels cost more.",
            RUN,
        ),
    ] = SegmentationTraining.fn_loss_weight,
    bce_loss_weight: Annotated[
        float,
        _option(
            "--bce-loss-weight",
            "Weight of an added per-pixel cross-entropy term (0: the book's Dice-only loss); 1 learns a selective mask sooner.",
            RUN,
        ),
    ] = SegmentationTraining.bce_loss_weight,
    background_share: Annotated[
        float,
        _option(
            "--background-share",
            "Share of training crops centred on non-nodule candidates (vessels, pleura) "
            "instead of nodules (0: the book's); teaches the mask to leave them out.",
            RUN,
        ),
    ] = SegmentationTraining.background_share,
    seg_threshold: Annotated[
        float, _option("--seg-threshold", "Probability above which a pixel is nodule (metrics).", RUN)
    ] = SegmentationTraining.seg_threshold,
    val_every: ValEveryOption = TrainConfig.val_every,
    val_stride: ValStrideOption = TrainConfig.val_stride,
    resume: ResumeOption = TrainConfig.resume,
    seed: SeedOption = TrainConfig.seed,
    optimizer: Annotated[OptimizerName, _option("--optimizer", OPTIMIZER_HELP, OPTIMIZER)] = SEGMENTATION_OPTIMIZER,
    lr: Annotated[float, _option("--lr", LR_HELP, OPTIMIZER)] = SEGMENTATION.lr,
    momentum: MomentumOption = TrainConfig.momentum,
    weight_decay: WeightDecayOption = TrainConfig.weight_decay,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = SEGMENTATION.augmentation.mirror,
    aug_shift: Annotated[float, _SEG_AUG["shift_fraction"]] = SEGMENTATION.augmentation.shift_fraction,
    aug_scale: Annotated[float, _SEG_AUG["scale_fraction"]] = SEGMENTATION.augmentation.scale_fraction,
    aug_rotate: Annotated[float, _SEG_AUG["rotation_deg"]] = SEGMENTATION.augmentation.rotation_deg,
    aug_noise: Annotated[float, _SEG_AUG["noise_hu"]] = SEGMENTATION.augmentation.noise_hu,
    aug_noise_max: Annotated[float, _SEG_AUG["noise_max_hu"]] = SEGMENTATION.augmentation.noise_max_hu,
    aug_hu_scale: Annotated[float, _SEG_AUG["hu_scale_fraction"]] = SEGMENTATION.augmentation.hu_scale_fraction,
    aug_hu_offset: Annotated[float, _SEG_AUG["hu_offset_hu"]] = SEGMENTATION.augmentation.hu_offset_hu,
    aug_kernel_probability: Annotated[
        float, _SEG_AUG["kernel_probability"]
    ] = SEGMENTATION.augmentation.kernel_probability,
    aug_blur: Annotated[float, _SEG_AUG["blur_sigma_max_vox"]] = SEGMENTATION.augmentation.blur_sigma_max_vox,
    aug_sharpen: Annotated[float, _SEG_AUG["sharpen_amount_max"]] = SEGMENTATION.augmentation.sharpen_amount_max,
    device: DeviceOption = TrainConfig.device,
    precision: PrecisionOption = Precision(TrainConfig.precision),
    channels_last: ChannelsLastOption = TrainConfig.channels_last,
    workers: WorkersOption = TrainConfig.workers,
    num_workers: NumWorkersAlias = None,
    threads: ThreadsOption = TrainConfig.threads,
    exclude_series: ExcludeSeriesOption = None,
) -> None:
    """Train the 2D segmentation U-Net on 64x64 crops around nodules (7 slices in, mask out).

    Validation runs on whole slices of the validation series: pixel precision, recall, Dice, and per-nodule recall (a nodule is found when the thresholded mask touches it).

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation Dice; TensorBoard logs in OUT/tensorboard.
    """
    _run(
        TrainConfig(
            task="seg",
            data_roots=tuple(resolve_data_roots(data_root)),
            out_dir=_out(out, "seg"),
            cache_dir=cache_dir,
            run_name=run_name,
            epochs=epochs,
            epoch_size=epoch_size,
            batch_size=batch_size,
            optimizer=optimizer.value,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            augmentation=_augmentation(
                SEGMENTATION.augmentation,
                no_augment,
                aug_mirror,
                shift_fraction=aug_shift,
                scale_fraction=aug_scale,
                rotation_deg=aug_rotate,
                noise_hu=aug_noise,
                noise_max_hu=aug_noise_max,
                hu_scale_fraction=aug_hu_scale,
                hu_offset_hu=aug_hu_offset,
                kernel_probability=aug_kernel_probability,
                blur_sigma_max_vox=aug_blur,
                sharpen_amount_max=aug_sharpen,
            ),
            seed=seed,
            device=device,
            precision=precision.value,
            channels_last=channels_last,
            workers=_workers(workers, num_workers),
            threads=threads,
            resume=resume,
            val_every=val_every,
            val_stride=val_stride,
            exclude_series=_excluded(exclude_series),
            segmentation=SegmentationTraining(
                fn_loss_weight=fn_loss_weight,
                bce_loss_weight=bce_loss_weight,
                seg_threshold=seg_threshold,
                background_share=background_share,
            ),
        )
    )


def register(app: typer.Typer) -> None:
    app.command(
        "train-cls",
        epilog=f"{SCOPE_NOTE} Examples: ct train-cls --data-root /data/luna16 --out runs/cls1 --epochs 10 | "
        "ct train-cls --malignancy --finetune runs/cls1/best.ckpt --finetune-depth 2 --out runs/mal1 | "
        "torchrun --standalone --nproc-per-node=4 -m cli train-cls --data-root /data/luna16 --out runs/cls-ddp",
    )(train_cls)
    app.command(
        "train-seg",
        epilog=f"{SCOPE_NOTE} Examples: ct train-seg --data-root /data/luna16 --out runs/seg1 | "
        "ct train-seg --out runs/seg1 --resume --epochs 20",
    )(train_seg)
