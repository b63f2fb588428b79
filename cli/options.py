"""Option types shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

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


class Precision(str, enum.Enum):
    """--precision of the training and diagnosis commands (what each "auto" means is theirs)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
