"""`ct demo`: synthetic data -> cache -> three trained models -> diagnosis -> evaluation."""

from __future__ import annotations

import enum
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.output import console
from ct_pipeline.demo import DEMO_SCALES, run_demo  # no torch or pandas at import

_DEFAULT = DEMO_SCALES["default"]


class Scale(str, enum.Enum):
    default = "default"
    tiny = "tiny"


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for everything the demo writes (reused by a second run).")
    ] = Path("demo"),
    scale: Annotated[
        Scale,
        typer.Option(
            "--scale",
            help=f"default: {_DEFAULT.series} {_DEFAULT.size} series, a few minutes per model; tiny: seconds (a smoke test).",
        ),
    ] = Scale.default,
) -> None:
    """Run the whole pipeline on synthetic data, printing each `ct` command before it runs.

    synth -> prepcache -> train-seg -> train-cls -> train-cls --malignancy (fine-tune) -> diagnose
    (the validation series) -> evaluate. A second run reuses the data, the cache, finished
    training runs and diagnosed series. The figures reached end up in OUT/summary.json.
    """
    started = time.perf_counter()
    shown = console()
    summary = run_demo(
        out,
        DEMO_SCALES[scale.value],
        runner=_run_in_subprocess,
        announce=lambda line: shown.print(f"\n[bold]{line}[/bold]", highlight=False),
    )
    _print_summary(summary, time.perf_counter() - started)


def _run_in_subprocess(argv) -> int:
    """Run `ct ARGV` as a fresh process (what a user's shell does); its output goes to the console."""
    return subprocess.run([sys.executable, "-m", "cli", *argv], check=False).returncode


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_summary(summary: dict, seconds: float) -> None:
    seg, cls, mal, det = (
        summary[k] for k in ("segmentation", "nodule_classifier", "malignancy_classifier", "detection")
    )
    table = Table(title="What the demo reached on its validation series (synthetic data)")
    table.add_column("model / step")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("segmentation U-Net", "nodules >= 4 mm touched by the mask (recall)", _fmt(seg["nodule_recall_4mm"]))
    table.add_row("", "pixel precision / Dice", f"{_fmt(seg['pixel_precision'])} / {_fmt(seg['dice'])}")
    table.add_row("nodule classifier", "ROC AUC (every candidate)", _fmt(cls["roc_auc"]))
    table.add_row("malignancy classifier", "ROC AUC (annotated nodules)", _fmt(mal["roc_auc"]))
    table.add_row("", "size-only baseline ROC AUC (diameter as score)", _fmt(mal["size_only_auc"]))
    table.add_row("end to end (ct diagnose)", "LUNA16 CPM", _fmt(det["cpm"]))
    table.add_row("", "nodules found / in the validation series", f"{det['detected']} / {det['nodules']}")
    shown = console()
    shown.print(table)
    outputs = summary["outputs"]
    minutes, secs = divmod(int(round(seconds)), 60)
    shown.print(
        f"done in {minutes}m{secs:02d}s\n"
        f"  report pages:  {outputs['report']}\n"
        f"  FROC plot:     {outputs['froc_plot']}\n"
        f"  TensorBoard:   {outputs['tensorboard']}\n"
        f"  checkpoints:   {outputs['checkpoints']}\n"
        f"  figures:       {Path(outputs['report']).parent.parent / 'summary.json'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo", epilog="Example: ct demo --out demo   (make demo runs this)")(demo)
