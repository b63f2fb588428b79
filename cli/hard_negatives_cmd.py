"""`ct hard-negatives`: the segmentation model's false positives on the training series, for `ct train-cls`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import (
    CacheDirOption,
    DataRootsOption,
    DeviceOption,
    RunsDirOption,
    SegModelOption,
    ThreadsOption,
)
from cli.output import console


def hard_negatives_command(
    out: Annotated[Path, typer.Option("--out", help="The candidates.csv-format file to write.", dir_okay=False)],
    seg_model: SegModelOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    val_stride: Annotated[int, typer.Option(help="Every N-th series (sorted by UID) is validation: never mined.")] = 10,
    max_per_series: Annotated[
        int, typer.Option(help="At most this many negatives per series, largest components first.")
    ] = 400,
    with_positives: Annotated[
        bool,
        typer.Option(
            "--with-positives",
            help="Also write the candidates that hit an annotated nodule (centre within its radius) as class 1: "
            "the pipeline's own candidates, for `ct train-cls --own-candidates FILE --own-share F`.",
            metavar="",
        ),
    ] = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Write the U-Net's candidates on the TRAINING series that are far from every annotated nodule,
    as class-0 rows: pass the file to `ct train-cls --extra-candidates` so the classifier learns
    the false positives it will meet in `ct diagnose`. With --with-positives the candidates that hit
    a nodule are written too (class 1), for `ct train-cls --own-candidates`; pieces of a nodule's
    mask off its centre are neither. Validation series are never mined."""
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.catalog import open_catalog
    from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
    from ct_pipeline.diagnosis.hard_negatives import HardNegativeConfig, mine_hard_negatives
    from ct_pipeline.diagnosis.networks import load_diagnosis_models, resolve_checkpoint
    from ct_pipeline.outputs import Place, data_root_places, refuse_overlaps
    from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots

    config = HardNegativeConfig(max_per_series=max_per_series, with_positives=with_positives)
    roots = resolve_data_roots(data_root)
    if seg_model is None:  # picked from --runs-dir: said, never a surprise (as ct diagnose does)
        seg_model = resolve_checkpoint(None, "seg", runs_dir)
        typer.echo(f"using --seg-model {seg_model}", err=True)
    refuse_overlaps([Place("--out", out)], [*data_root_places(roots), Place("--seg-model", seg_model)])
    check_writable(out, "--out")
    catalog = open_catalog(roots, resolve_cache_dir(cache_dir))
    series = catalog.select("train", val_stride)
    models = load_diagnosis_models(seg_model, None, None, InferenceOptions(device=device, threads=threads))
    output = console()
    n, positives = mine_hard_negatives(
        catalog,
        series,
        models,
        out,
        DiagnosisConfig(),
        config,
        announce=lambda uid, count: output.print(f"{uid}: {count} candidates") if output.is_terminal else None,
    )
    hits = f" ({positives} hitting a nodule)" if with_positives else ""
    output.print(f"hard-negatives: {n} candidates{hits} of {len(series)} training series -> {out}")


def register(app: typer.Typer) -> None:
    app.command(
        "hard-negatives",
        epilog="Example: ct hard-negatives --seg-model runs/train-seg/best.ckpt --data-root data --val-stride 4 "
        "--out runs/hard_negatives.csv && ct train-cls --extra-candidates runs/hard_negatives.csv ...",
    )(hard_negatives_command)
