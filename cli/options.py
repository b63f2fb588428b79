"""Option types shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ct_pipeline.precision import PRECISIONS

DataRootsOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--data-root",
        help="Folder with CT series (LUNA16 subset*/ layout, DICOM folders, image files). Repeatable. "
        "Default: $CT_DATA_ROOT (os.pathsep-separated).",
        show_default=False,
        rich_help_panel="Data",
    ),
]

CacheDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--cache-dir",
        help="Cache folder. Default: $CT_CACHE_DIR, else data_cache/ of the checkout. Keep it on a local disk.",
        show_default=False,
        rich_help_panel="Data",
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

AllowUnevenOption = Annotated[
    bool,
    typer.Option(
        "--allow-uneven-spacing",
        help="Read DICOM series with missing slices or uneven spacing by resampling onto a regular grid.",
        rich_help_panel="Data",
    ),
]


# --precision of the training and diagnosis commands (what each "auto" means is theirs): the
# library's names, so that a new precision needs no edit here.
Precision = enum.Enum("Precision", [(name, name) for name in PRECISIONS], type=str)


MODELS_PANEL = "Models"


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
SegModelOption = Annotated[Optional[Path], checkpoint_option("seg", "Segmentation U-Net")]
ClsModelOption = Annotated[Optional[Path], checkpoint_option("cls", "Nodule classifier")]
MalModelOption = Annotated[
    Optional[Path],
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
    typer.Option("--runs-dir", envvar="CT_RUNS_DIR", help="Where ct train-* wrote its runs.", rich_help_panel=MODELS_PANEL),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress on stderr (by default a bar on a terminal, a line per stage and series otherwise)."
    ),
]

