"""`ct train-cls` and `ct train-seg`: list the options, build a TrainConfig, call the loop.

Both commands take the same options (they share one loop); only the defaults differ, and those
come from ``ct_pipeline.training.TASK_DEFAULTS`` (an option left unset means "the task's default").
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.options import CacheDirOption, DataRootsOption, Precision
from ct_pipeline.paths import resolve_data_roots

RUN, OPTIMIZER, AUGMENT, SPEED = "Run", "Optimizer", "Augmentation", "Speed"

SCOPE_NOTE = (
    "--batch-size is per process (rank): with torchrun --nproc-per-node=N the global batch is N x batch-size. "
    "--epoch-size counts samples over all ranks. --lr is used as given, whatever N."
)


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OptimizerName(str, enum.Enum):
    sgd = "sgd"
    adam = "adam"


def _option(name: str, help: str, panel: str, shown: str | bool = True, **extra: Any) -> Any:
    """A typer option in ``panel``; ``shown`` is the default as displayed (text for task-dependent ones)."""
    return typer.Option(name, help=help, rich_help_panel=panel, show_default=shown, **extra)


# -- options both commands share ---------------------------------------------------------------
OutOption = Annotated[
    Optional[Path],
    _option("--out", "The run's folder: last.ckpt, best.ckpt, tensorboard/.", RUN, "runs/train-<kind>", file_okay=False),
]
RunNameOption = Annotated[str, _option("--run-name", "Label in logs (default: the --out folder's name).", RUN, False)]
EpochsOption = Annotated[int, _option("--epochs", "Epochs in all (a resumed run continues up to this).", RUN)]
ValEveryOption = Annotated[int, _option("--val-every", "Validate every N epochs (and after the last).", RUN)]
ValStrideOption = Annotated[int, _option("--val-stride", "Every N-th series (sorted by UID) is validation.", RUN)]
ResumeOption = Annotated[
    bool, _option("--resume", "Continue the run in --out from its last.ckpt (same options; --epochs may grow).", RUN)
]
SeedOption = Annotated[int, _option("--seed", "Fixes initial weights, sample order and augmentation.", RUN)]
MomentumOption = Annotated[float, _option("--momentum", "SGD momentum.", OPTIMIZER)]
WeightDecayOption = Annotated[float, _option("--weight-decay", "L2 penalty (0: off).", OPTIMIZER)]
NoAugmentOption = Annotated[bool, _option("--no-augment", "Switch every augmentation off.", AUGMENT)]
MirrorOption = Annotated[bool, _option("--aug-mirror/--no-aug-mirror", "Random flips of each spatial axis.", AUGMENT)]
DeviceOption = Annotated[Device, _option("--device", "auto: cuda when torch sees a GPU, else cpu.", SPEED)]
PrecisionOption = Annotated[
    Precision,
    _option(
        "--precision",
        "Autocast precision. auto: bf16 on GPUs with bf16 and on CPUs with AMX, else fp32 (without AMX, "
        "bf16 training is slower than fp32 on the CPU). fp16: GPUs only.",
        SPEED,
    ),
]
ChannelsLastOption = Annotated[
    bool, _option("--channels-last/--no-channels-last", "Channels-last memory format (faster convolutions).", SPEED)
]
WorkersOption = Annotated[
    int, _option("--num-workers", "DataLoader processes per rank (0: load in the training process).", SPEED)
]
ExcludeSeriesOption = Annotated[
    Optional[Path],
    _option(
        "--exclude-series",
        "A text file of series UIDs (one per line, # comments) to leave out of training and validation, e.g. "
        "the unreadable ones a refused run listed in OUT/unreadable-series.txt.",
        RUN, False, dir_okay=False,
    ),
]
ThreadsOption = Annotated[
    Optional[int],
    _option(
        "--threads",
        "CPU threads per rank (--num-workers processes run one each beside them). Default: the allocation "
        "(OMP_NUM_THREADS, else the least of SLURM_CPUS_PER_TASK, the cgroup quota and the CPU affinity).",
        SPEED, False, min=1,
    ),
]


def _optimizer_option(default: str) -> Any:
    return _option("--optimizer", "sgd (with --momentum) or adam.", OPTIMIZER, default)


def _lr_option(default: str) -> Any:
    return _option("--lr", "Learning rate (not scaled with the number of ranks).", OPTIMIZER, default)


def _augment_options(shift: str, scale: str, rotate: str, noise: str) -> tuple[Any, Any, Any, Any]:
    return (
        _option("--aug-shift", "Largest shift, fraction of half the side (0: off).", AUGMENT, shift),
        _option("--aug-scale", "Largest magnification change, fraction (0: off).", AUGMENT, scale),
        _option("--aug-rotate", "Largest rotation about the slice axis, degrees (0: off).", AUGMENT, rotate),
        _option("--aug-noise", "Gaussian noise standard deviation, HU (0: off).", AUGMENT, noise),
    )


_CLS_AUG = _augment_options("0.1", "0.2", "180", "25")
_SEG_AUG = _augment_options("0.03", "0.2", "180", "25")


def _augmentation(task: str, no_augment: bool, mirror: bool, shift, scale, rotate, noise):
    from ct_pipeline.datasets import AugmentationConfig
    from ct_pipeline.training import TASK_DEFAULTS

    if no_augment:
        return AugmentationConfig.off()
    base: AugmentationConfig = TASK_DEFAULTS[task]["augmentation"]
    return AugmentationConfig(
        mirror=mirror,
        shift_fraction=base.shift_fraction if shift is None else shift,
        scale_fraction=base.scale_fraction if scale is None else scale,
        rotation_deg=base.rotation_deg if rotate is None else rotate,
        noise_hu=base.noise_hu if noise is None else noise,
    )


def _excluded(path: Path | None) -> tuple[str, ...] | None:
    from ct_pipeline.paths import read_series_list

    return None if path is None else tuple(read_series_list(path, "--exclude-series"))


def _run(task: str, out: Path | None, options: dict[str, Any]) -> None:
    """Build the config (unset options take the task's defaults), train, print where the results are."""
    from ct_pipeline.training import TrainConfig, train

    given = {
        key: value.value if isinstance(value, enum.Enum) else value for key, value in options.items() if value is not None
    }
    config = TrainConfig.for_task(task, out_dir=out or Path("runs") / f"train-{task}", **given)
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
    run_name: RunNameOption = "",
    malignancy: Annotated[
        bool,
        _option("--malignancy", "Train benign vs malignant on annotated nodules instead of nodule vs non-nodule.", RUN),
    ] = False,
    finetune: Annotated[
        Optional[Path],
        _option("--finetune", "With --malignancy: start from this nodule-classifier checkpoint, new head.", RUN, False,
                dir_okay=False),
    ] = None,
    finetune_depth: Annotated[
        int, _option("--finetune-depth", "With --finetune: train the last N blocks (1: head only; 2: + block4; ... 6: all).", RUN)
    ] = 1,
    block_batchnorm: Annotated[
        bool,
        _option("--block-batchnorm", "A BatchNorm after every convolution: not the book's shape, but it learns in far "
                "fewer steps (a --finetune keeps its source's shape).", RUN),
    ] = False,
    centre_head: Annotated[
        bool,
        _option("--centre-head", "The head also sees the central cells of blocks 2 and 3: not the book's shape, but "
                "it learns from far fewer samples (a --finetune keeps its source's shape).", RUN),
    ] = False,
    epochs: EpochsOption = 10,
    epoch_size: Annotated[
        Optional[int], _option("--epoch-size", "Training samples per epoch, over all ranks.", RUN, "20000; 2000 with --malignancy")
    ] = None,
    batch_size: Annotated[Optional[int], _option("--batch-size", "Samples per step on EACH rank.", RUN, "32")] = None,
    balance_ratio: Annotated[
        float, _option("--balance-ratio", "Negatives (benign) per positive (malignant) in training epochs; 0: unbalanced.", RUN)
    ] = 1.0,
    val_every: ValEveryOption = 1,
    val_stride: ValStrideOption = 10,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    optimizer: Annotated[Optional[OptimizerName], _optimizer_option("sgd")] = None,
    lr: Annotated[Optional[float], _lr_option("0.001; 0.003 with --malignancy")] = None,
    momentum: MomentumOption = 0.99,
    weight_decay: WeightDecayOption = 0.0,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = True,
    aug_shift: Annotated[Optional[float], _CLS_AUG[0]] = None,
    aug_scale: Annotated[Optional[float], _CLS_AUG[1]] = None,
    aug_rotate: Annotated[Optional[float], _CLS_AUG[2]] = None,
    aug_noise: Annotated[Optional[float], _CLS_AUG[3]] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    channels_last: ChannelsLastOption = True,
    num_workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    exclude_series: ExcludeSeriesOption = None,
    extra_candidates: Annotated[
        Optional[list[Path]],
        _option("--extra-candidates", "More candidates.csv-format files whose class-0 rows are negatives too, e.g. "
                "`ct hard-negatives` output: the segmentation model's own false positives. Repeatable.", RUN, False,
                dir_okay=False),
    ] = None,
) -> None:
    """Train the 3D nodule classifier (nodule vs non-nodule), or with --malignancy benign vs malignant.

    One line per epoch: loss, precision, recall, F1, ROC AUC, and the validation confusion counts.

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation ROC AUC; TensorBoard logs in OUT/tensorboard.
    """
    task = "mal" if malignancy else "cls"
    _run(task, out, {
        "data_roots": tuple(resolve_data_roots(data_root)), "cache_dir": cache_dir, "run_name": run_name,
        "finetune": finetune, "finetune_depth": finetune_depth,
        "block_batchnorm": block_batchnorm, "centre_head": centre_head, "epochs": epochs, "epoch_size": epoch_size,
        "batch_size": batch_size, "balance_ratio": balance_ratio, "val_every": val_every, "val_stride": val_stride,
        "resume": resume, "seed": seed, "optimizer": optimizer, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay,
        "augmentation": _augmentation(task, no_augment, aug_mirror, aug_shift, aug_scale, aug_rotate, aug_noise),
        "device": device, "precision": precision, "channels_last": channels_last, "num_workers": num_workers,
        "threads": threads, "exclude_series": _excluded(exclude_series),
        "extra_candidates": tuple(extra_candidates or ()),
    })


def train_seg(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    out: OutOption = None,
    run_name: RunNameOption = "",
    epochs: EpochsOption = 10,
    epoch_size: Annotated[Optional[int], _option("--epoch-size", "Training crops per epoch, over all ranks.", RUN, "3000")] = None,
    batch_size: Annotated[Optional[int], _option("--batch-size", "Crops per step on EACH rank.", RUN, "16")] = None,
    fn_loss_weight: Annotated[
        float,
        _option("--fn-loss-weight", "Weight of the false-negative Dice term (book: 8): missing nodule pixels cost more.", RUN),
    ] = 8.0,
    bce_loss_weight: Annotated[
        float,
        _option("--bce-loss-weight", "Weight of an added per-pixel cross-entropy term (0: the book's Dice-only loss); 1 learns a selective mask sooner.", RUN),
    ] = 0.0,
    background_share: Annotated[
        float,
        _option("--background-share", "Share of training crops centred on non-nodule candidates (vessels, pleura) "
                "instead of nodules (0: the book's); teaches the mask to leave them out.", RUN),
    ] = 0.0,
    seg_threshold: Annotated[
        float, _option("--threshold", "Probability above which a pixel is nodule (metrics).", RUN)
    ] = 0.5,
    val_every: ValEveryOption = 1,
    val_stride: ValStrideOption = 10,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    optimizer: Annotated[Optional[OptimizerName], _optimizer_option("adam")] = None,
    lr: Annotated[Optional[float], _lr_option("0.001")] = None,
    momentum: MomentumOption = 0.99,
    weight_decay: WeightDecayOption = 0.0,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = True,
    aug_shift: Annotated[Optional[float], _SEG_AUG[0]] = None,
    aug_scale: Annotated[Optional[float], _SEG_AUG[1]] = None,
    aug_rotate: Annotated[Optional[float], _SEG_AUG[2]] = None,
    aug_noise: Annotated[Optional[float], _SEG_AUG[3]] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    channels_last: ChannelsLastOption = True,
    num_workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    exclude_series: ExcludeSeriesOption = None,
) -> None:
    """Train the 2D segmentation U-Net on 64x64 crops around nodules (7 slices in, mask out).

    Validation runs on whole slices of the validation series: pixel precision, recall, Dice, and per-nodule recall (a nodule is found when the thresholded mask touches it).

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation Dice; TensorBoard logs in OUT/tensorboard.
    """
    _run("seg", out, {
        "data_roots": tuple(resolve_data_roots(data_root)), "cache_dir": cache_dir, "run_name": run_name,
        "epochs": epochs, "epoch_size": epoch_size, "batch_size": batch_size, "fn_loss_weight": fn_loss_weight,
        "bce_loss_weight": bce_loss_weight, "background_share": background_share, "seg_threshold": seg_threshold, "val_every": val_every, "val_stride": val_stride, "resume": resume,
        "seed": seed, "optimizer": optimizer, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "augmentation": _augmentation("seg", no_augment, aug_mirror, aug_shift, aug_scale, aug_rotate, aug_noise),
        "device": device, "precision": precision, "channels_last": channels_last, "num_workers": num_workers,
        "threads": threads, "exclude_series": _excluded(exclude_series),
    })


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
