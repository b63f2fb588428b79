"""`ct merge DIR`: gather the per-series results of `ct diagnose --out DIR` (all shards) into one LUNA16 CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.diagnose_options import AnnotationsOption, CsvOption, EvaluateOption
from cli.options import DataRootsOption, JsonOption, ThresholdOption
from ct_pipeline.diagnosis.config import DiagnosisConfig

EPILOG = (
    "Examples: ct merge results/ | ct merge results/ --csv all.csv | "
    "ct merge results/ --out merged/ --evaluate --data-root /data/luna16. Exit codes: 0 done, 2 bad input."
)


def merge_command(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="The --out folder of `ct diagnose` runs (every shard's result files).",
            show_default=False,
        ),
    ],
    csv_path: CsvOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            show_default=False,
            help="Folder for the merged findings.csv (and its provenance file). Default without --csv: DIR/findings.csv.",
        ),
    ] = None,
    allow_mixed: Annotated[
        bool,
        typer.Option(
            "--allow-mixed", help="Also merge results made with different models or options (refused otherwise)."
        ),
    ] = False,
    evaluate: EvaluateOption = False,
    annotations: AnnotationsOption = None,
    threshold: ThresholdOption = DiagnosisConfig().nodule_threshold,
    data_root: DataRootsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Gather the result files in DIR into one LUNA16 CSV (--csv FILE and/or --out FOLDER, default DIR/findings.csv).

    Refuses results made with different models or options unless --allow-mixed; with --evaluate, also prints the confusion table over all of them. Nothing is diagnosed: no models are loaded.
    """
    from cli.diagnose_output import print_evaluation
    from ct_pipeline.apps.diagnose import merge_results
    from ct_pipeline.diagnosis.result_files import read_result_file, result_files
    from ct_pipeline.outputs import Place
    from ct_pipeline.paths import resolve_data_roots

    read = (Place("--annotations", annotations),) if evaluate and annotations else ()
    for path, n_series, n_rows in merge_results(directory, csv_path, out, allow_mixed, read):
        typer.echo(f"wrote {path}: {n_rows} candidates of {n_series} series", err=json_output)
    if evaluate:
        results = [read_result_file(p) for p in result_files(directory)]
        print_evaluation(results, annotations, resolve_data_roots(data_root), threshold, json_output)


def register(app: typer.Typer) -> None:
    app.command("merge", epilog=EPILOG)(merge_command)
