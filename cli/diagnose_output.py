"""How `ct diagnose` and `ct merge` show what happened: tables on stdout, notes on stderr, JSON Lines with --json."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from cli.option_names import name_options
from cli.output import console, print_json
from cli.progress import ProgressDisplay


def show_events(request, log_file, stop, *, json_output: bool, quiet: bool):
    """Run the application, printing each event; returns its summary and, when the one series
    named was refused for bad input or data, that error (left to the caller to say once)."""
    from ct_pipeline.apps.diagnose import (
        DiagnoseSummary,
        FilesStored,
        FileWritten,
        ModelsLoaded,
        NothingToStore,
        SeriesOutcome,
        run_diagnose,
    )

    say = (lambda text: typer.echo(text, err=True)) if json_output else typer.echo
    has_malignancy, refusal = False, None
    progress = ProgressDisplay.on_stderr(quiet)
    for event in run_diagnose(request, log_file, stop, progress):
        progress.pause()
        if isinstance(event, ModelsLoaded):
            # Every time, once the files proved valid: a model picked from --runs-dir must never be a surprise.
            typer.echo("using " + " ".join(f"{option} {path}" for option, path in event.paths.items()), err=True)
            has_malignancy = event.has_malignancy
        elif isinstance(event, SeriesOutcome) and request.names_one_series and event.outcome.refusal:
            refusal = event.outcome.refusal
        elif isinstance(event, SeriesOutcome):
            _show_outcome(event.outcome, request.config.nodule_threshold, has_malignancy, json_output)
        elif isinstance(event, FileWritten):
            say(
                f"wrote {event.path}"
                + (f": {event.rows} candidates of {event.n_series} series" if event.rows is not None else "")
            )
        elif isinstance(event, FilesStored):
            for stored in event.outcomes:
                say(f"{stored.status} on {stored.server}: {stored.path} (instance {stored.sop_instance_uid})")
        elif isinstance(event, NothingToStore):  # stderr: a note, never part of a saved table or JSON
            typer.echo(
                f"--store: {event.series_uid} is not a DICOM series ({event.format}); nothing to store", err=True
            )
        elif isinstance(event, DiagnoseSummary):
            return event, refusal
    raise AssertionError("run_diagnose ended without a summary")


def _show_outcome(outcome, threshold: float, has_malignancy: bool, json_output: bool) -> None:
    if outcome.status == "failed":
        typer.echo(f"failed {outcome.item.label}: {name_options(outcome.message)}", err=True)
        return
    if outcome.status == "done" and outcome.message:
        typer.echo(f"redid {outcome.item.label}: {outcome.message}", err=True)
    if json_output:
        from ct_pipeline.diagnosis.result_files import json_line

        sys.stdout.write(json_line(outcome.result) + "\n")
        sys.stdout.flush()
    elif outcome.status == "skipped":
        typer.echo(f"skipped {outcome.item.label}: {outcome.message}", err=True)
    else:
        _print_result(outcome.result, threshold, has_malignancy)


def _print_result(result, threshold: float, has_malignancy: bool) -> None:
    findings = result.nodules(threshold)
    typer.echo(f"series {result.series_uid}: {len(findings)} finding(s) at nodule probability >= {threshold:g}")
    table = Table()
    for column in ("#", "centre x, y, z (mm)", "diam. mm", "nodule p", "malign. p", "merged"):
        table.add_column(column, justify="right", no_wrap=True)
    for rank, finding in enumerate(findings, start=1):
        x, y, z = finding.center_xyz
        malignancy = "-" if finding.malignancy_prob is None else f"{finding.malignancy_prob:.3f}"
        table.add_row(
            str(rank),
            f"{x:.1f}, {y:.1f}, {z:.1f}",
            f"{finding.diameter_mm:.1f}",
            f"{finding.nodule_prob:.3f}",
            malignancy,
            str(finding.n_merged),
        )
    if findings:
        console().print(table)
    below = len(result.findings) - len(findings)
    notes = [f"{below} more candidate(s) below the threshold (see --json or --csv)"] if below else []
    if not has_malignancy:
        notes.append("no malignancy model: malignancy not estimated")
    if notes:
        typer.echo("; ".join(notes))
    stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings_s.items())
    typer.echo(f"time: {stages}; total {sum(result.timings_s.values()):.2f} s")


def print_evaluation(results, annotations, roots, threshold: float, json_output: bool) -> None:
    from ct_pipeline.evaluation import render_confusion_table
    from ct_pipeline.evaluation.diagnosed import evaluate_results, nodule_annotations

    report = evaluate_results(results, nodule_annotations(annotations, roots), threshold)
    if json_output:
        print_json({"evaluation": report.to_dict()}, lines=True)
        return
    shown = console()
    for uid, table in report.per_series.items():
        shown.print(render_confusion_table(table, title=f"series {uid}"))
    shown.print(render_confusion_table(report.total, title=f"total over {len(report.per_series)} series"))
    if report.n_unknown_malignancy:
        shown.print(f"{report.n_unknown_malignancy} nodule(s) of unknown malignancy left out")
