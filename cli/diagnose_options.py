"""The options only `ct diagnose` (and, for the output ones, `ct merge`) take; the shared ones are in cli.options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import RESOURCES_PANEL, Precision
from ct_pipeline.diagnosis.config import DiagnosisConfig

OUTPUT_PANEL = "Output"
BATCH_PANEL = "Batch"
TUNING_PANEL = "Tuning"
_DEFAULTS = DiagnosisConfig()
_BOOK = DiagnosisConfig.book_style()

SeriesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="SERIES...",
        help="Series UIDs under the data roots, DICOM folders, or image files (.mhd, .nrrd, .nii.gz).",
        show_default=False,
    ),
]
MergeFractionOption = Annotated[
    float,
    typer.Option(
        "--merge-fraction",
        min=0.0,
        rich_help_panel=TUNING_PANEL,
        help="Merge candidates closer than this fraction of the larger one's diameter (mm); 0: keep all, as the book.",
    ),
]
MaxCandidatesOption = Annotated[
    int,
    typer.Option(
        "--max-candidates",
        min=0,
        rich_help_panel=TUNING_PANEL,
        help="Classify only the best K candidates of each scan, ranked by the U-Net's output; 0: every one, as the book.",
    ),
]
TtaOption = Annotated[
    int,
    typer.Option(
        "--tta",
        rich_help_panel=TUNING_PANEL,
        help="Test-time flips: average the classifiers' probability over N mirrored copies of each crop "
        "(1 off; 2 + along x; 4 every in-plane mirror; 8 + each along z), about N times the classifiers' "
        "time. Off with --book-style.",
    ),
]
LungMaskOption = Annotated[
    bool,
    typer.Option(
        "--lung-mask/--no-lung-mask",
        help="Run the U-Net only around the lungs (HU-threshold mask, dilated by --lung-margin).",
        rich_help_panel=TUNING_PANEL,
    ),
]
LungMarginOption = Annotated[
    float, typer.Option("--lung-margin", min=0.0, help="Dilation of the lung mask, mm.", rich_help_panel=TUNING_PANEL)
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto: bf16 on a CPU with AVX512-BF16 or AMX (~1.5x faster; findings >= 0.9 as in fp32, "
        "probabilities within a few hundredths), fp32 on other CPUs; on a GPU the U-Net in fp32 and the "
        "classifiers in bf16. fp32, bf16 or fp16 (GPU) for all three.",
        rich_help_panel=TUNING_PANEL,
    ),
]
ClsPrecisionOption = Annotated[
    Precision | None,
    typer.Option(
        "--cls-precision",
        help="The classifiers' precision, where it should differ from --precision (e.g. fp32 for "
        "probabilities that do not depend on the CPU's bf16 kernels).",
        rich_help_panel=TUNING_PANEL,
        show_default=False,
    ),
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        show_default=False,
        rich_help_panel=TUNING_PANEL,
        help=f"Slices per U-Net batch, per concurrent batch. Default: {_DEFAULTS.seg_batch_size} "
        f"({_BOOK.seg_batch_size} with --book-style).",
    ),
]
ClsBatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--cls-batch-size",
        min=1,
        show_default=False,
        rich_help_panel=TUNING_PANEL,
        help=f"Crops per classifier batch, per concurrent batch. Default: {_DEFAULTS.cls_batch_size} "
        f"({_BOOK.cls_batch_size} with --book-style).",
    ),
]
ConcurrentBatchesOption = Annotated[
    int | None,
    typer.Option(
        "--concurrent-batches",
        min=1,
        show_default=False,
        rich_help_panel=RESOURCES_PANEL,
        help="Batches run side by side, one thread each. Default: one per thread of --threads (1 on a GPU).",
    ),
]
BookStyleOption = Annotated[
    bool,
    typer.Option(
        "--book-style",
        help="Run as the book's code does (every slice, fp32, contiguous memory, batches of 4, no merging): "
        "the baseline for comparisons.",
        rich_help_panel=TUNING_PANEL,
    ),
]
CsvOption = Annotated[
    Path | None,
    typer.Option(
        "--csv",
        help="Write every candidate as LUNA16 CSV: seriesuid,coordX,coordY,coordZ,probability.",
        rich_help_panel=OUTPUT_PANEL,
        show_default=False,
    ),
]
DicomOutOption = Annotated[
    Path | None,
    typer.Option(
        "--dicom-out",
        help="Folder for a DICOM Segmentation and Structured Report (TID 1500) of each DICOM series' nodules, "
        "to open in a viewer next to the images; other inputs get an NRRD label map and JSON.",
        rich_help_panel=OUTPUT_PANEL,
        show_default=False,
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Folder for PNG pictures of the findings and an index.html showing them.",
        rich_help_panel=OUTPUT_PANEL,
        show_default=False,
    ),
]
EvaluateOption = Annotated[
    bool,
    typer.Option(
        "--evaluate",
        help="Print the confusion table against known nodules (LUNA16 annotations).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
AnnotationsOption = Annotated[
    Path | None,
    typer.Option(
        "--annotations",
        help="Known nodules for --evaluate. Default: the LUNA16 CSVs in the data roots.",
        rich_help_panel=OUTPUT_PANEL,
        show_default=False,
    ),
]
AllSeriesOption = Annotated[
    bool, typer.Option("--all", help="Diagnose every series under the data roots.", rich_help_panel=BATCH_PANEL)
]
SeriesFileOption = Annotated[
    Path | None,
    typer.Option(
        "--series-file",
        help="Diagnose the series listed in FILE, one per line (# comments).",
        rich_help_panel=BATCH_PANEL,
        show_default=False,
    ),
]
ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="K/N: only every N-th series from the K-th (0-based), for array jobs.",
        rich_help_panel=BATCH_PANEL,
        show_default=False,
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Write one result file per series here (atomically), skip series already done, and "
        "a merged findings.csv at the end (`ct merge` gathers the shards' results).",
        rich_help_panel=BATCH_PANEL,
        show_default=False,
    ),
]
LogFileOption = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        help="Append one line per series (done, skipped, failed) and the warnings to this file. "
        "Default with --out: OUT/logs/shard-K-of-N.log (OUT/logs/diagnose.log without --shard).",
        rich_help_panel=BATCH_PANEL,
        show_default=False,
    ),
]
SeriesUidOption = Annotated[
    str | None,
    typer.Option("--series", help="Which series, when a DICOM folder holds several.", rich_help_panel="Data"),
]


def _moved_to_merge(value: Path | None) -> None:
    from ct_pipeline.errors import BadInputError

    if value is not None:
        raise BadInputError(
            f"ct diagnose --merge is now its own command: ct merge {value} (same --csv, --out, --allow-mixed, --evaluate)"
        )


# Not an alias (that would be a second merge path inside diagnose): only says where it went.
MovedMergeOption = Annotated[
    Path | None, typer.Option("--merge", hidden=True, callback=_moved_to_merge, show_default=False)
]
