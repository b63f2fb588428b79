"""`ct demo`: the whole pipeline on synthetic data, as the `ct` commands a user would type.

The recipe is a list of :class:`DemoStep` (each one `ct` command line); :func:`run_demo` runs
them in order through a runner (by default a fresh `python -m cli` process per step, exactly as
a user would), and every step reuses what an earlier run left behind: the data set and the cache
are kept, finished training runs resume to "already trained", diagnosed series are skipped. The
figures it reaches are gathered by :func:`demo_summary` into ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.errors import BadInputError, CtError


@dataclass(frozen=True)
class DemoScale:
    """How much data and training the demo uses: ``seg``/``cls``/``mal`` are (epochs, samples
    per epoch) of each model, ``*_options`` the extra `ct train-*` options of each."""

    series: int
    size: str
    seed: int
    val_stride: int
    seg: tuple[int, int]
    cls: tuple[int, int]
    mal: tuple[int, int]
    workers: int
    seg_options: tuple[str, ...] = ()
    cls_options: tuple[str, ...] = ()
    mal_options: tuple[str, ...] = ()


# What learns in minutes on a CPU (README, "What to expect"): a cross-entropy term beside the
# book's Dice loss with false negatives weighted 2x rather than 8x, the classifier's centre head,
# Adam, small batches, the whole network fine-tuned for malignancy, and validation only at the
# end (it costs as much as an epoch).
_FAST_SEG = ("--bce-loss-weight", "1", "--fn-loss-weight", "2")
_FAST_CLS = ("--centre-head", "--optimizer", "adam", "--lr", "0.001", "--batch-size", "16")
# No scale augmentation for malignancy: it rescales the nodule by up to 20 %, and size is the strongest cue.
_FAST_MAL = ("--finetune-depth", "6", "--aug-scale", "0", "--optimizer", "adam", "--lr", "0.001", "--batch-size", "16")

DEMO_SCALES = {
    # About 11 minutes on a 2-core CPU from a fresh clone (the venv install included).
    "default": DemoScale(
        series=60, size="medium", seed=0, val_stride=4, seg=(10, 1600), cls=(12, 960), mal=(8, 320), workers=1,
        seg_options=_FAST_SEG + ("--val-every", "10"), cls_options=_FAST_CLS + ("--val-every", "12"),
        mal_options=_FAST_MAL,
    ),
    # The smoke test in `make test`: every step on a handful of tiny series, in seconds.
    "tiny": DemoScale(
        series=6, size="small", seed=2, val_stride=3, seg=(1, 32), cls=(1, 64), mal=(1, 32), workers=0,
        seg_options=_FAST_SEG, cls_options=_FAST_CLS, mal_options=("--finetune-depth", "1"),
    ),
}


@dataclass(frozen=True)
class DemoStep:
    """One `ct` command of the recipe (``argv`` without the leading `ct`)."""

    name: str
    argv: tuple[str, ...]


def demo_steps(out_dir: Path, scale: DemoScale) -> list[DemoStep]:
    """The recipe's `ct` commands for a demo in ``out_dir``, given what is already there."""
    data, cache, runs = out_dir / "data", out_dir / "cache", out_dir / "runs"
    common = ("--data-root", str(data), "--cache-dir", str(cache))
    steps: list[DemoStep] = []
    if not (data / "candidates.csv").is_file():
        steps.append(DemoStep("synth", (
            "synth", str(data), "--series", str(scale.series), "--size", scale.size, "--seed", str(scale.seed), "--overwrite",
        )))
    steps.append(DemoStep("prepcache", ("prepcache", *common, "--workers", "2")))

    def train(name: str, command: tuple[str, ...], epochs_size: tuple[int, int], options: tuple[str, ...]) -> DemoStep:
        run_dir = runs / name
        argv = (
            *command, *options, *common, "--out", str(run_dir), "--epochs", str(epochs_size[0]),
            "--epoch-size", str(epochs_size[1]), "--val-stride", str(scale.val_stride),
            "--num-workers", str(scale.workers),
        )
        if (run_dir / "last.ckpt").is_file():
            argv += ("--resume",)  # finished: "already trained"; killed: continues
        return DemoStep(f"train-{name}", argv)

    steps.append(train("seg", ("train-seg",), scale.seg, scale.seg_options))
    steps.append(train("cls", ("train-cls",), scale.cls, scale.cls_options))
    mal_command = ("train-cls", "--malignancy", "--finetune", str(runs / "cls" / "best.ckpt"))
    steps.append(train("mal", mal_command, scale.mal, scale.mal_options))
    steps.append(DemoStep("diagnose", (
        "diagnose", *common, "--series-file", str(out_dir / "val_series.txt"),
        "--seg-model", str(runs / "seg" / "best.ckpt"), "--cls-model", str(runs / "cls" / "best.ckpt"),
        "--mal-model", str(runs / "mal" / "best.ckpt"),
        "--out", str(out_dir / "findings"), "--csv", str(out_dir / "findings.csv"), "--report", str(out_dir / "report"),
        "--threshold", "0.9",  # what the table and the report show; the CSV (and so the FROC) keeps every candidate
    )))
    steps.append(DemoStep("evaluate", (
        "evaluate", str(out_dir / "findings.csv"), "--annotations", str(data / "annotations.csv"),
        "--series-file", str(out_dir / "val_series.txt"), "--plot", str(out_dir / "froc.png"), "--bootstrap", "200",
    )))
    return steps


Runner = Callable[[Sequence[str]], int]


def run_in_subprocess(argv: Sequence[str]) -> int:
    """Run `ct ARGV` as a fresh process (what a user's shell does); its output goes to the console."""
    return subprocess.run([sys.executable, "-m", "cli", *argv], check=False).returncode


def write_val_series(out_dir: Path, val_stride: int) -> Path:
    """The validation series of the training split (every ``val_stride``-th by UID), one per line."""
    from ct_pipeline.catalog import open_catalog

    path = out_dir / "val_series.txt"
    val = open_catalog([out_dir / "data"], out_dir / "cache").split(val_stride)[1]
    atomic_write_text(path, "".join(f"{uid}\n" for uid in val))
    return path


def run_demo(
    out_dir: Path,
    scale: DemoScale,
    runner: Runner = run_in_subprocess,
    announce: Callable[[str], None] = print,
) -> dict:
    """Run the recipe in ``out_dir`` (reusing what is there); returns :func:`demo_summary`.

    Raises CtError naming the step when a step fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for step in demo_steps(out_dir, scale):
        if step.name == "diagnose":
            write_val_series(out_dir, scale.val_stride)
        announce(f"$ ct {' '.join(step.argv)}")
        code = runner(step.argv)
        if code != 0:
            raise CtError(f"demo step `ct {step.name}` failed with exit code {code}; see its output above")
    summary = demo_summary(out_dir)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _best_val_metrics(run_dir: Path, kind: str) -> dict[str, float]:
    from ct_pipeline.models.checkpoints import load_checkpoint  # torch: only when summarising

    return dict(load_checkpoint(run_dir / "best.ckpt", kind).metrics.get("val", {}))


def demo_summary(out_dir: Path) -> dict:
    """The figures of a finished demo: validation metrics of each model's best checkpoint, the
    LUNA16 CPM of the diagnosed validation series, and where the outputs are."""
    from ct_pipeline.evaluation.froc import evaluate_froc_files

    runs = out_dir / "runs"
    missing = [p for p in (runs / "seg", runs / "cls", runs / "mal") if not (p / "best.ckpt").is_file()]
    if missing or not (out_dir / "findings.csv").is_file():
        raise BadInputError(f"{out_dir} holds no finished demo (missing {missing[0] if missing else 'findings.csv'}); run `ct demo`")
    seg, cls, mal = (_best_val_metrics(runs / k, k) for k in ("seg", "cls", "mal"))
    froc = evaluate_froc_files(
        out_dir / "findings.csv", out_dir / "data" / "annotations.csv", series_file=out_dir / "val_series.txt"
    ).overall

    def number(value) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    return {
        "segmentation": {
            "nodule_recall_4mm": number(seg.get("nodule_recall_4mm")), "nodules": number(seg.get("nodules")),
            "pixel_precision": number(seg.get("precision")), "pixel_recall": number(seg.get("recall")),
            "dice": number(seg.get("dice")),
        },
        "nodule_classifier": {"roc_auc": number(cls.get("roc_auc")), "f1": number(cls.get("f1"))},
        "malignancy_classifier": {
            "roc_auc": number(mal.get("roc_auc")), "size_only_auc": number(mal.get("size_auc")),
            "size_threshold_auc": number(mal.get("size_threshold_auc")),
            "size_threshold_mm": number(mal.get("size_threshold_mm")),
        },
        "detection": {
            "cpm": number(froc.cpm), "nodules": froc.n_nodules, "detected": froc.n_detected,
            "sensitivity_at_fp_per_scan": dict(zip((str(r) for r in froc.fp_rates), map(number, froc.sensitivity))),
        },
        "outputs": {
            "report": str(out_dir / "report" / "index.html"), "froc_plot": str(out_dir / "froc.png"),
            "tensorboard": f"tensorboard --logdir {runs}", "checkpoints": str(runs / "*" / "best.ckpt"),
            "findings_csv": str(out_dir / "findings.csv"),
        },
    }
