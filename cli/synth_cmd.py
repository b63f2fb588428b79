"""`ct synth`: write a LUNA16-format folder of synthetic chest CTs with known nodules."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import console

EPILOG = "Example: ct synth demo_data --series 4 --size small --seed 1 && ct series list --data-root demo_data"


class StyleChoice(str, Enum):
    standard = "standard"
    site_b = "site-b"


class SizeChoice(str, Enum):
    small = "small"
    medium = "medium"
    full = "full"


def synth(
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="New (or empty) folder for the data set: subset0/*.mhd/.raw and the LUNA16 CSVs.", file_okay=False
        ),
    ],
    series: Annotated[int, typer.Option("--series", "-n", help="Number of CT series to generate.")] = 4,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; the same seed and options give identical files.")
    ] = 0,
    size: Annotated[
        SizeChoice,
        typer.Option(
            "--size",
            help="full: 512x512 slices (0.55-0.88 mm), 100-300 slices, like LUNA16. medium: 256x256 (1.1-1.4 mm), "
            "90-250 slices (the demo's, about a second per series). small: 128x128, 40-80 slices (for tests).",
        ),
    ] = SizeChoice.full,
    dicom: Annotated[
        bool, typer.Option("--dicom", help="Also write each series as DICOM under OUT_DIR/dicom/<uid>/.")
    ] = False,
    style: Annotated[
        StyleChoice,
        typer.Option(
            "--style",
            help="Phantom family. site-b: another scanner and site: HU calibration, 35-75 HU noise, soft or sharp "
            "kernel, other spacings, contrast-enhanced denser vessels, a third each flipped and oblique, ground-glass "
            "and part-solid nodules, more on the pleura and on vessels. Tune on both.",
        ),
    ] = StyleChoice.standard,
    oblique_fraction: Annotated[
        float | None,
        typer.Option(
            "--oblique-fraction",
            help="Share of series with a slightly rotated direction (at least one when > 0).",
            show_default="0.1; 1/3 with --style site-b",
        ),
    ] = None,
    flip_fraction: Annotated[
        float | None,
        typer.Option(
            "--flip-fraction",
            help="Share of series stored with two array axes reversed.",
            show_default="0.15; 1/3 with --style site-b",
        ),
    ] = None,
    follow_up: Annotated[
        bool,
        typer.Option(
            "--follow-up",
            help="Also write a later scan of each series under OUT_DIR/followup/ (for ct compare): the patient "
            "re-posed (2-4 degrees, 3-8 mm), nodules grown, stable, shrunk, vanished or new, 60-400 days later; "
            "the truth in followup_truth.csv and followup_pairs.csv.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier `ct synth` data set in this folder: only files it listed in the folder's "
            ".ct-synth-manifest.json, unchanged since, are deleted; any other file stops it.",
        ),
    ] = False,
) -> None:
    """Generate synthetic chest CTs in the LUNA16 layout, with nodules, malignancy and candidates.

    Anatomy: air, table, body wall, ribs, spine, heart, airways, lungs (~-850 HU) with branching
    vessels, and 0-4 nodules per series (3-30 mm, solid or part-solid, some on the lung wall;
    --style site-b: another site's images and nodules).
    Research and test data only.
    """
    from ct_pipeline.synth import SynthConfig

    config = SynthConfig(
        out_dir=out_dir,
        n_series=series,
        seed=seed,
        size=size.value,
        dicom=dicom,
        style=style.value,
        oblique_fraction=oblique_fraction,
        flip_fraction=flip_fraction,
        overwrite=overwrite,
        follow_up=follow_up,
    )
    started = time.perf_counter()
    out = console()
    result = _write_with_progress(config, out)
    seconds = time.perf_counter() - started
    out.print(
        f"wrote {len(result.series)} series ({result.n_nodules} nodules, {result.n_candidates} candidates) "
        f"to {result.out_dir} in {seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


def _write_with_progress(config, out):
    from ct_pipeline.synth import write_synthetic_dataset

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task("generating series", total=config.n_series)
        return write_synthetic_dataset(config, on_series=lambda summary: progress.advance(task))


def register(app: typer.Typer) -> None:
    app.command("synth", epilog=EPILOG)(synth)
