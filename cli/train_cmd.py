"""`ct train-cls` and `ct train-seg`: list the options, build a TrainConfig, call the loop."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.options import CacheDirOption, DataRootsOption
from ct_pipeline.paths import resolve_data_roots

_RUN = "Run"
_OPT = "Optimizer"
_AUG = "Augmentation"
_SPEED = "Speed"

SCOPE_NOTE = (
    "--batch-size is per process (rank): with torchrun --nproc-per-node=N the global batch is N x batch-size. "
    "--epoch-size counts samples over all ranks. --lr is used as given, whatever N."
)


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class OptimizerName(str, enum.Enum):
    sgd = "sgd"
    adam = "adam"


OutOption = Annotated[
    Optional[Path],
    typer.Option(
        "--out", help="The run's folder: last.ckpt, best.ckpt, tensorboard/.", show_default="runs/train-<kind>",
        file_okay=False, rich_help_panel=_RUN,
    ),
]
RunNameOption = Annotated[str, typer.Option("--run-name", help="Label in logs (default: the --out folder's name).", rich_help_panel=_RUN)]
EpochsOption = Annotated[int, typer.Option("--epochs", help="Epochs in all (a resumed run continues up to this).", rich_help_panel=_RUN)]
WorkersOption = Annotated[int, typer.Option("--num-workers", help="DataLoader processes per rank (0: load in the training process).", rich_help_panel=_SPEED)]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.ckpt (same options; --epochs may grow).", rich_help_panel=_RUN)]
ValEveryOption = Annotated[int, typer.Option("--val-every", help="Validate every N epochs (and after the last).", rich_help_panel=_RUN)]
ValStrideOption = Annotated[int, typer.Option("--val-stride", help="Every N-th series (sorted by UID) is validation.", rich_help_panel=_RUN)]
SeedOption = Annotated[int, typer.Option("--seed", help="Fixes initial weights, sample order and augmentation.", rich_help_panel=_RUN)]
MomentumOption = Annotated[float, typer.Option("--momentum", help="SGD momentum.", rich_help_panel=_OPT)]
WeightDecayOption = Annotated[float, typer.Option("--weight-decay", help="L2 penalty (0: off).", rich_help_panel=_OPT)]
DeviceOption = Annotated[Device, typer.Option("--device", help="auto: cuda when torch sees a GPU, else cpu.", rich_help_panel=_SPEED)]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="Autocast precision. auto: bf16 on GPUs with bf16 and on CPUs with AMX, else fp32 (without AMX, "
        "bf16 training is slower than fp32 on the CPU). fp16: GPUs only.",
        rich_help_panel=_SPEED,
    ),
]
ChannelsLastOption = Annotated[bool, typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (faster convolutions).", rich_help_panel=_SPEED)]
NoAugmentOption = Annotated[bool, typer.Option("--no-augment", help="Switch every augmentation off.", rich_help_panel=_AUG)]
MirrorOption = Annotated[bool, typer.Option("--aug-mirror/--no-aug-mirror", help="Random flips of each spatial axis.", rich_help_panel=_AUG)]


def _augmentation(task: str, no_augment: bool, mirror: bool, shift, scale, rotate, noise):
    from ct_pipeline.datasets import AugmentationConfig
    from ct_pipeline.training.config import TASK_DEFAULTS

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


def _run(task: str, out: Path | None, options: dict[str, Any]) -> None:
    from ct_pipeline.training import TrainConfig, train

    given = {key: value.value if isinstance(value, enum.Enum) else value for key, value in options.items() if value is not None}
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
    malignancy: Annotated[bool, typer.Option("--malignancy", help="Train benign vs malignant on annotated nodules instead of nodule vs non-nodule.", rich_help_panel=_RUN)] = False,
    finetune: Annotated[Optional[Path], typer.Option("--finetune", help="With --malignancy: start from this nodule-classifier checkpoint, new head.", dir_okay=False, rich_help_panel=_RUN)] = None,
    finetune_depth: Annotated[int, typer.Option("--finetune-depth", help="With --finetune: train the last N blocks (1: head only; 2: + block4; ... 6: all).", rich_help_panel=_RUN)] = 1,
    epochs: EpochsOption = 10,
    epoch_size: Annotated[Optional[int], typer.Option("--epoch-size", help="Training samples per epoch, over all ranks.", show_default="20000; 2000 with --malignancy", rich_help_panel=_RUN)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Samples per step on EACH rank.", show_default="32", rich_help_panel=_RUN)] = None,
    balance_ratio: Annotated[float, typer.Option("--balance-ratio", help="Negatives (benign) per positive (malignant) in training epochs; 0: unbalanced.", rich_help_panel=_RUN)] = 1.0,
    val_every: ValEveryOption = 1,
    val_stride: ValStrideOption = 10,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    optimizer: Annotated[Optional[OptimizerName], typer.Option("--optimizer", help="sgd (with --momentum) or adam.", show_default="sgd", rich_help_panel=_OPT)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (not scaled with the number of ranks).", show_default="0.001; 0.003 with --malignancy", rich_help_panel=_OPT)] = None,
    momentum: MomentumOption = 0.99,
    weight_decay: WeightDecayOption = 0.0,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = True,
    aug_shift: Annotated[Optional[float], typer.Option("--aug-shift", help="Largest shift, fraction of half the side (0: off).", show_default="0.1", rich_help_panel=_AUG)] = None,
    aug_scale: Annotated[Optional[float], typer.Option("--aug-scale", help="Largest magnification change, fraction (0: off).", show_default="0.2", rich_help_panel=_AUG)] = None,
    aug_rotate: Annotated[Optional[float], typer.Option("--aug-rotate", help="Largest rotation about the slice axis, degrees (0: off).", show_default="180", rich_help_panel=_AUG)] = None,
    aug_noise: Annotated[Optional[float], typer.Option("--aug-noise", help="Gaussian noise standard deviation, HU (0: off).", show_default="25", rich_help_panel=_AUG)] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    channels_last: ChannelsLastOption = True,
    num_workers: WorkersOption = 1,
) -> None:
    """Train the 3D nodule classifier (nodule vs non-nodule), or with --malignancy benign vs malignant.

    One line per epoch: loss, precision, recall, F1, ROC AUC, and the validation confusion counts.

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation ROC AUC; TensorBoard logs in OUT/tensorboard.
    """
    task = "mal" if malignancy else "cls"
    _run(task, out, {
        "data_roots": tuple(resolve_data_roots(data_root)), "cache_dir": cache_dir, "run_name": run_name,
        "finetune": finetune, "finetune_depth": finetune_depth, "epochs": epochs, "epoch_size": epoch_size,
        "batch_size": batch_size, "balance_ratio": balance_ratio, "val_every": val_every, "val_stride": val_stride,
        "resume": resume, "seed": seed, "optimizer": optimizer, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay,
        "augmentation": _augmentation(task, no_augment, aug_mirror, aug_shift, aug_scale, aug_rotate, aug_noise),
        "device": device, "precision": precision, "channels_last": channels_last, "num_workers": num_workers,
    })


def train_seg(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    out: OutOption = None,
    run_name: RunNameOption = "",
    epochs: EpochsOption = 10,
    epoch_size: Annotated[Optional[int], typer.Option("--epoch-size", help="Training crops per epoch, over all ranks.", show_default="3000", rich_help_panel=_RUN)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Crops per step on EACH rank.", show_default="16", rich_help_panel=_RUN)] = None,
    fn_loss_weight: Annotated[float, typer.Option("--fn-loss-weight", help="Weight of the false-negative Dice term (book: 8): missing nodule pixels cost more.", rich_help_panel=_RUN)] = 8.0,
    seg_threshold: Annotated[float, typer.Option("--threshold", help="Probability above which a pixel is nodule (metrics).", rich_help_panel=_RUN)] = 0.5,
    val_every: ValEveryOption = 1,
    val_stride: ValStrideOption = 10,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    optimizer: Annotated[Optional[OptimizerName], typer.Option("--optimizer", help="sgd (with --momentum) or adam.", show_default="adam", rich_help_panel=_OPT)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (not scaled with the number of ranks).", show_default="0.001", rich_help_panel=_OPT)] = None,
    momentum: MomentumOption = 0.99,
    weight_decay: WeightDecayOption = 0.0,
    no_augment: NoAugmentOption = False,
    aug_mirror: MirrorOption = True,
    aug_shift: Annotated[Optional[float], typer.Option("--aug-shift", help="Largest shift, fraction of half the side (0: off).", show_default="0.03", rich_help_panel=_AUG)] = None,
    aug_scale: Annotated[Optional[float], typer.Option("--aug-scale", help="Largest magnification change, fraction (0: off).", show_default="0.2", rich_help_panel=_AUG)] = None,
    aug_rotate: Annotated[Optional[float], typer.Option("--aug-rotate", help="Largest rotation about the slice axis, degrees (0: off).", show_default="180", rich_help_panel=_AUG)] = None,
    aug_noise: Annotated[Optional[float], typer.Option("--aug-noise", help="Gaussian noise standard deviation, HU (0: off).", show_default="25", rich_help_panel=_AUG)] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    channels_last: ChannelsLastOption = True,
    num_workers: WorkersOption = 1,
) -> None:
    """Train the 2D segmentation U-Net on 64x64 crops around nodules (7 slices in, mask out).

    Validation runs on whole slices of the validation series: pixel precision, recall, Dice, and per-nodule recall (a nodule is found when the thresholded mask touches it).

    OUT/last.ckpt is saved every epoch, OUT/best.ckpt at the best validation Dice; TensorBoard logs in OUT/tensorboard.
    """
    _run("seg", out, {
        "data_roots": tuple(resolve_data_roots(data_root)), "cache_dir": cache_dir, "run_name": run_name,
        "epochs": epochs, "epoch_size": epoch_size, "batch_size": batch_size, "fn_loss_weight": fn_loss_weight,
        "seg_threshold": seg_threshold, "val_every": val_every, "val_stride": val_stride, "resume": resume,
        "seed": seed, "optimizer": optimizer, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "augmentation": _augmentation("seg", no_augment, aug_mirror, aug_shift, aug_scale, aug_rotate, aug_noise),
        "device": device, "precision": precision, "channels_last": channels_last, "num_workers": num_workers,
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
