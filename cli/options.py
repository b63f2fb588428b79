"""Options shared by several commands, each spelled, validated and documented once.

One word, one meaning (the README's command table lists them): ``--threads`` CPU threads,
``--workers`` processes, ``--threshold`` a nodule probability, ``--seg-threshold`` the U-Net's pixel
probability, ``--device`` one device spelling everywhere. ``tests/cli/test_option_vocabulary.py`` holds
every command to it.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

import typer

from ct_pipeline.diagnosis.config import DiagnosisConfig  # no torch: the defaults shown in help
from ct_pipeline.precision import PRECISIONS

DATA_PANEL = "Data"
MODELS_PANEL = "Models"
RESOURCES_PANEL = "Resources"

_DIAGNOSIS = DiagnosisConfig()

DataRootsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--data-root",
        help="Folder with CT series (LUNA16 subset*/ layout, DICOM folders, image files). Repeatable. "
        "Default: $CT_DATA_ROOT (os.pathsep-separated).",
        show_default=False,
        rich_help_panel=DATA_PANEL,
    ),
]

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Cache folder. Default: $CT_CACHE_DIR, else data_cache/ of the checkout. Keep it on a local disk.",
        show_default=False,
        rich_help_panel=DATA_PANEL,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

AllowUnevenOption = Annotated[
    bool,
    typer.Option(
        "--allow-uneven-spacing",
        help="Read DICOM series with missing slices or uneven spacing by resampling onto a regular grid.",
        rich_help_panel=DATA_PANEL,
    ),
]


# --precision of the training and diagnosis commands (what each "auto" means is theirs): the
# library's names, so that a new precision needs no edit here.
Precision = enum.Enum("Precision", [(name, name) for name in PRECISIONS], type=str)


def checkpoint_option(kind: str, text: str):
    """``--seg-model`` / ``--cls-model``: a checkpoint, by default the newest of its kind."""
    return typer.Option(
        f"--{kind}-model",
        help=f"{text} checkpoint, or a file from `ct models export` (.onnx, TorchScript). "
        "Default: the newest best.ckpt of that kind under --runs-dir.",
        show_default=False,
        rich_help_panel=MODELS_PANEL,
    )


TrustModelOption = Annotated[
    bool,
    typer.Option(
        "--trust-model",
        help="Run a TorchScript model that `ct models export` did not write (TorchScript runs its code when loaded).",
        rich_help_panel=MODELS_PANEL,
    ),
]
SegModelOption = Annotated[Path | None, checkpoint_option("seg", "Segmentation U-Net")]
ClsModelOption = Annotated[Path | None, checkpoint_option("cls", "Nodule classifier")]
MalModelOption = Annotated[
    Path | None,
    typer.Option(
        "--mal-model",
        help="Malignancy classifier checkpoint, or a file from `ct models export`. Default: the newest one under "
        "--runs-dir, if any.",
        show_default=False,
        rich_help_panel=MODELS_PANEL,
    ),
]
RunsDirOption = Annotated[
    Path,
    typer.Option(
        "--runs-dir", envvar="CT_RUNS_DIR", help="Where ct train-* wrote its runs.", rich_help_panel=MODELS_PANEL
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress on stderr (by default a bar on a terminal, a line per stage and series otherwise).",
    ),
]

ThresholdOption = Annotated[
    float,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Nodule probability at or above which a candidate is a finding: listed, compared, estimated for "
        "malignancy, drawn in the report. JSON and CSV keep every candidate.",
    ),
]
SegThresholdOption = Annotated[
    float,
    typer.Option(
        "--seg-threshold",
        min=0.0,
        max=1.0,
        help=f"U-Net probability above which a pixel is nodule (book: {_DIAGNOSIS.seg_threshold:g}).",
    ),
]

ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads this command may use. Default: its allocation (OMP_NUM_THREADS, else the least of "
        "SLURM_CPUS_PER_TASK, the cgroup quota and the CPU affinity).",
        show_default=False,
        rich_help_panel=RESOURCES_PANEL,
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes run side by side (one CPU each).",
        rich_help_panel=RESOURCES_PANEL,
    ),
]

# Spelling only: whether this machine has the device is known once torch loads (resolve_device).
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _checked_device(value: str) -> str:
    from ct_pipeline.errors import BadInputError

    if not _DEVICE.fullmatch(value):
        raise BadInputError(f"--device {value!r} is not a device ct runs on; use cpu, cuda, cuda:N, mps or auto")
    return value


DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        callback=_checked_device,
        help="cpu, cuda, cuda:N, mps or auto (auto: a GPU when torch sees one, else the CPU).",
        rich_help_panel=RESOURCES_PANEL,
    ),
]
