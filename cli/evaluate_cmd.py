"""`ct evaluate`: the LUNA16 FROC curve and CPM of a detection system's findings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.options import JsonOption
from cli.output import console, print_json

if TYPE_CHECKING:  # pandas comes with the evaluation code: imported when the command runs
    from ct_pipeline.evaluation.froc import FrocReport, FrocSummary

EPILOG = (
    "Example: ct evaluate predictions.csv --annotations annotations.csv "
    "--excluded annotations_excluded.csv --series-file seriesuids.csv --plot froc.png --by-size"
)

_CsvPath = dict(exists=True, dir_okay=False, readable=True)


def evaluate(
    predictions: Annotated[
        Path,
        typer.Argument(
            help="Findings CSV in the LUNA16 submission format: seriesuid,coordX,coordY,coordZ,probability (mm).",
            **_CsvPath,
        ),
    ],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            help="Nodules: seriesuid,coordX,coordY,coordZ,diameter_mm (LUNA16 annotations.csv).",
            **_CsvPath,
        ),
    ],
    excluded: Annotated[
        Path | None,
        typer.Option(
            "--excluded",
            help="Irrelevant findings that count neither way (annotations_excluded.csv; diameter -1 = 10 mm).",
            **_CsvPath,
        ),
    ] = None,
    series_file: Annotated[
        Path | None,
        typer.Option(
            "--series-file",
            help="Scans to evaluate, one series UID per line, no header (seriesuids.csv). "
            "Default: the series in --annotations.",
            **_CsvPath,
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Scan resamples for the 95% intervals; 0 for none.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling (the interval is reproducible).")] = 0,
    by_size: Annotated[
        bool, typer.Option("--by-size", help="Also report nodules under 5 mm, 5-10 mm and over 10 mm.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write the FROC curve with its band and operating points to this PNG.", dir_okay=False
        ),
    ] = None,
    max_findings_per_scan: Annotated[
        int,
        typer.Option(
            "--max-per-scan",
            min=0,
            help="Score only the most probable findings of each scan (the challenge's cap); 0 for all.",
        ),
    ] = 100,
    json_output: JsonOption = False,
) -> None:
    """Score findings by the LUNA16 challenge's rules: FROC curve, sensitivity at 1/8..8 FPs per scan, CPM.

    A hit is a finding closer to a nodule's centre than its radius; a scan's 100 most probable findings count.

    Several hits on one nodule count once, hits on excluded findings neither way; other findings are false positives.
    """
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.evaluation.froc import FrocConfig, evaluate_froc_files
    from ct_pipeline.outputs import Place, refuse_overlaps

    if plot is not None:
        refuse_overlaps(
            [Place("--plot", plot)],
            [
                Place("PREDICTIONS", predictions),
                Place("--annotations", annotations),
                excluded and Place("--excluded", excluded),
                series_file and Place("--series-file", series_file),
            ],
        )
        check_writable(plot, "--plot")
    config = FrocConfig(
        max_findings_per_scan=max_findings_per_scan, bootstrap_samples=bootstrap, seed=seed, by_size=by_size
    )
    report = evaluate_froc_files(predictions, annotations, excluded, series_file, config)
    if plot is not None:
        from ct_pipeline.evaluation.plot import plot_froc

        plot_froc(report, plot)
    if json_output:
        print_json(report.to_dict())
        return
    _print_report(report, plot)


def _cell(summary: FrocSummary, index: int | None) -> str:
    """'0.812 (0.78-0.84)' for an operating point (``index``) or the CPM (None)."""
    value = summary.cpm if index is None else summary.sensitivity[index]
    interval = summary.cpm_ci95 if index is None else (summary.sensitivity_ci95 or [None] * 7)[index]
    if summary.n_nodules == 0:
        return "-"
    text = f"{value:.3f}"
    if interval is not None:
        text += f" ({interval[0]:.3f}-{interval[1]:.3f})"
    return text


def _froc_table(report: FrocReport) -> Table:
    groups = (report.overall, *report.by_size)
    counts = report.counts
    interval_note = (
        f", 95% interval from {report.config.bootstrap_samples} resamples" if report.config.bootstrap_samples else ""
    )
    table = Table(
        title=(
            f"LUNA16 FROC: {report.n_scans} scans, {report.overall.n_nodules} nodules "
            f"({report.overall.n_detected} detected), {counts.n_scored} findings scored, "
            f"{report.n_false_positives} false positives{interval_note}"
        ),
        title_justify="left",
    )
    table.add_column("FP per scan", justify="right")
    for group in groups:
        label = "all nodules" if group is report.overall else f"{group.label} ({group.n_nodules})"
        table.add_column(label, justify="right")
    for index, rate in enumerate(report.overall.fp_rates):
        table.add_row(f"{rate:g}", *(_cell(group, index) for group in groups))
    table.add_row("CPM", *(_cell(group, None) for group in groups), style="bold")
    return table


def _ignored_findings(report: FrocReport) -> list[str]:
    counts = report.counts
    return [
        text
        for count, text in (
            (counts.n_outside_set, f"{counts.n_outside_set} on series outside the evaluated set"),
            (counts.n_over_cap, f"{counts.n_over_cap} beyond {report.config.max_findings_per_scan} per scan"),
            (counts.n_on_excluded, f"{counts.n_on_excluded} on excluded findings"),
            (counts.n_extra_hits, f"{counts.n_extra_hits} extra hits on detected nodules"),
        )
        if count
    ]


def _print_report(report: FrocReport, plot: Path | None) -> None:
    out = console()
    out.print(_froc_table(report))
    ignored = _ignored_findings(report)
    if ignored:
        out.print("Ignored findings: " + "; ".join(ignored) + ".")
    if plot is not None:
        out.print(f"FROC plot written to {plot}")


def register(app: typer.Typer) -> None:
    app.command("evaluate", epilog=EPILOG)(evaluate)
