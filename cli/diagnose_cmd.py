"""`ct diagnose`: find nodules in CT series and report them (console, JSON Lines, LUNA16 CSV, HTML)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import (
    AllowUnevenOption, CacheDirOption, ClsModelOption, DataRootsOption, JsonOption, MalModelOption, Precision,
    QuietOption, RunsDirOption, SegModelOption, TrustModelOption,
)  # fmt: skip
from cli.output import EXIT_SOME_FAILED, console, print_json
from cli.progress import ProgressDisplay
from ct_pipeline.diagnosis.config import DiagnosisConfig

log = logging.getLogger(__name__)

EPILOG = (
    "Examples: ct diagnose /data/dicom/patient1 --seg-model seg.ckpt --cls-model cls.ckpt --report report/ | "
    "ct diagnose --all --data-root /data/luna16 --out results/ --shard 0/8 --json | "
    "ct diagnose --merge results/ --csv all.csv. "
    "Exit codes: 0 done, 2 bad input, 3 some series failed (the others are done). "
    "Research software, not a medical device."
)
_OUTPUT = "Output"
_BATCH = "Batch"
_TUNING = "Tuning"
_DEFAULTS = DiagnosisConfig()
_BOOK = DiagnosisConfig.book_style()


def diagnose_command(
    series: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="SERIES...",
            help="Series UIDs under the data roots, DICOM folders, or image files (.mhd, .nrrd, .nii.gz).",
            show_default=False,
        ),
    ] = None,
    seg_model: SegModelOption = None,
    cls_model: ClsModelOption = None,
    mal_model: MalModelOption = None,
    trust_model: TrustModelOption = False,
    runs_dir: RunsDirOption = Path("runs"),
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Nodule probability at or above which a candidate is a finding: listed, estimated for "
            "malignancy, drawn in the report. JSON and CSV keep every candidate.",
        ),
    ] = 0.5,  # fmt: skip
    seg_threshold: Annotated[
        float,
        typer.Option(
            "--seg-threshold",
            min=0.0,
            max=1.0,
            help="U-Net probability above which a pixel is nodule (book: 0.5).",
            rich_help_panel=_TUNING,
        ),
    ] = _DEFAULTS.seg_threshold,
    merge_fraction: Annotated[
        float,
        typer.Option(
            "--merge-fraction",
            min=0.0,
            help="Merge candidates closer than this fraction of the larger one's diameter (mm); 0: keep all, as the book.",
            rich_help_panel=_TUNING,
        ),
    ] = _DEFAULTS.merge_fraction,  # fmt: skip
    max_candidates: Annotated[
        int,
        typer.Option(
            "--max-candidates",
            min=0,
            help="Classify only the best K candidates of each scan, ranked by the U-Net's output; 0: every one, as the book.",
            rich_help_panel=_TUNING,
        ),
    ] = _DEFAULTS.max_candidates,
    lung_mask: Annotated[
        bool,
        typer.Option(
            "--lung-mask/--no-lung-mask",
            help="Run the U-Net only around the lungs (HU-threshold mask, dilated by --lung-margin).",
            rich_help_panel=_TUNING,
        ),
    ] = True,
    lung_margin: Annotated[
        float, typer.Option("--lung-margin", min=0.0, help="Dilation of the lung mask, mm.", rich_help_panel=_TUNING)
    ] = _DEFAULTS.lung_margin_mm,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto.", rich_help_panel=_TUNING)
    ] = "auto",
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="auto: the U-Net in fp32, the classifiers in bf16 on a GPU and fp32 on the CPU (the same "
            "probabilities on every CPU); fp32, bf16 or fp16 (GPU) for all three.",
            rich_help_panel=_TUNING,
        ),
    ] = Precision.auto,
    cls_precision: Annotated[
        Optional[Precision],
        typer.Option(
            "--cls-precision",
            help="The classifiers' precision, where it should differ from --precision: bf16 on a CPU with "
            "AVX512-BF16 or AMX classifies ~1.5x faster, with probabilities within a few hundredths of fp32.",
            rich_help_panel=_TUNING,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size",
            min=1,
            show_default=False,
            rich_help_panel=_TUNING,
            help=f"Slices per U-Net batch, per worker. Default: {_DEFAULTS.seg_batch_size} "
            f"({_BOOK.seg_batch_size} with --book-style).",
        ),
    ] = None,
    cls_batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--cls-batch-size",
            min=1,
            show_default=False,
            rich_help_panel=_TUNING,
            help=f"Crops per classifier batch, per worker. Default: {_DEFAULTS.cls_batch_size} "
            f"({_BOOK.cls_batch_size} with --book-style).",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            min=1,
            help="Batches run side by side, one thread each. Default: one per thread of --threads (1 on a GPU).",
            show_default=False,
            rich_help_panel=_TUNING,
        ),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads this command may use. Default: its allocation (OMP_NUM_THREADS, else the least of "
            "SLURM_CPUS_PER_TASK, the cgroup quota and the CPU affinity).",
            show_default=False,
            rich_help_panel=_TUNING,
        ),
    ] = None,
    book_style: Annotated[
        bool,
        typer.Option(
            "--book-style",
            help="Run as the book's code does (every slice, fp32, contiguous memory, batches of 4, no merging): "
            "the baseline for comparisons.",
            rich_help_panel=_TUNING,
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    csv_path: Annotated[
        Optional[Path],
        typer.Option(
            "--csv",
            help="Write every candidate as LUNA16 CSV: seriesuid,coordX,coordY,coordZ,probability.",
            rich_help_panel=_OUTPUT,
            show_default=False,
        ),
    ] = None,
    dicom_out: Annotated[
        Optional[Path],
        typer.Option(
            "--dicom-out",
            help="Folder for a DICOM Segmentation and Structured Report (TID 1500) of each DICOM series' nodules, "
            "to open in a viewer next to the images; other inputs get an NRRD label map and JSON.",
            rich_help_panel=_OUTPUT,
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            help="Folder for PNG pictures of the findings and an index.html showing them.",
            rich_help_panel=_OUTPUT,
            show_default=False,
        ),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Print the confusion table against known nodules (LUNA16 annotations).",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    annotations: Annotated[
        Optional[Path],
        typer.Option(
            "--annotations",
            help="Known nodules for --evaluate. Default: the LUNA16 CSVs in the data roots.",
            rich_help_panel=_OUTPUT,
            show_default=False,
        ),
    ] = None,
    all_series: Annotated[
        bool, typer.Option("--all", help="Diagnose every series under the data roots.", rich_help_panel=_BATCH)
    ] = False,
    series_file: Annotated[
        Optional[Path],
        typer.Option(
            "--series-file",
            help="Diagnose the series listed in FILE, one per line (# comments).",
            rich_help_panel=_BATCH,
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            help="K/N: only every N-th series from the K-th (0-based), for array jobs.",
            rich_help_panel=_BATCH,
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Write one result file per series here (atomically), skip series already done, and "
            "a merged findings.csv at the end. With --merge: only the merged findings.csv.",
            rich_help_panel=_BATCH,
            show_default=False,
        ),
    ] = None,  # fmt: skip
    merge: Annotated[
        Optional[Path],
        typer.Option(
            "--merge",
            help="Only gather the result files of an --out folder into one CSV (--csv FILE and/or --out FOLDER, "
            "default DIR/findings.csv); "
            "with --evaluate, also the confusion table over all of them.",
            rich_help_panel=_BATCH,
            show_default=False,
        ),
    ] = None,
    allow_mixed: Annotated[
        bool,
        typer.Option(
            "--allow-mixed",
            help="With --merge: also merge results made with different models or options (refused otherwise).",
            rich_help_panel=_BATCH,
        ),
    ] = False,
    log_file: Annotated[
        Optional[Path],
        typer.Option(
            "--log-file",
            help="Append one line per series (done, skipped, failed) and the warnings to this file. "
            "Default with --out: OUT/logs/shard-K-of-N.log (OUT/logs/diagnose.log without --shard).",
            rich_help_panel=_BATCH,
            show_default=False,
        ),
    ] = None,
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    series_uid: Annotated[
        Optional[str],
        typer.Option("--series", help="Which series, when a DICOM folder holds several.", rich_help_panel="Data"),
    ] = None,
    allow_uneven_spacing: AllowUnevenOption = False,
) -> None:
    """Find lung nodules: segment the slices, group candidates, classify them, merge duplicates, report.

    Prints a table of the findings at or above --threshold and the time of each stage; --json prints one JSON object per series instead. Research software, not a medical device.
    """
    options = dict(locals())
    from ct_pipeline.errors import BadInputError

    if merge is not None:
        if series or all_series or series_file:
            raise BadInputError(
                "--merge DIR only gathers existing results; give no SERIES, --all or --series-file with it"
            )
        from ct_pipeline.apps.diagnose import merge_results

        for path, n_series, n_rows in merge_results(merge, csv_path, out, allow_mixed, _annotations_read(options)):
            typer.echo(f"wrote {path}: {n_rows} candidates of {n_series} series", err=json_output)
        if evaluate:
            from ct_pipeline.paths import resolve_data_roots
            from ct_pipeline.diagnosis.result_files import read_result_file, result_files

            results = [read_result_file(p) for p in result_files(merge)]
            _print_evaluation(results, annotations, resolve_data_roots(data_root), threshold, json_output)
        return
    _run(options)


def _log_path(options: dict, shard) -> Optional[Path]:
    """--log-file, else one file per shard under --out (a re-run of the task appends to it)."""
    if options["log_file"] is not None:
        return options["log_file"]
    if options["out"] is None:
        return None
    name = "diagnose.log" if shard.count == 1 else f"shard-{shard.index}-of-{shard.count}.log"
    return options["out"] / "logs" / name


def _annotations_read(options: dict) -> tuple:
    """--annotations, read by --evaluate (the default, the data roots' tables, is among the run's inputs)."""
    from ct_pipeline.outputs import Place

    return (Place("--annotations", options["annotations"]),) if options["evaluate"] and options["annotations"] else ()


def _request(options: dict):
    """The command line as the application's typed request."""
    from ct_pipeline.apps.diagnose import DiagnoseRequest
    from ct_pipeline.loading import LoadOptions
    from ct_pipeline.paths import resolve_data_roots
    from ct_pipeline.sharding import Shard

    config, inference = _configs(options)
    return DiagnoseRequest(
        sources=tuple(options["series"] or ()), series_file=options["series_file"], all_series=options["all_series"],
        data_roots=tuple(resolve_data_roots(options["data_root"])), cache_dir=options["cache_dir"],
        load=LoadOptions(allow_uneven_spacing=options["allow_uneven_spacing"], series_uid=options["series_uid"]),
        shard=Shard.parse(options["shard"]), seg_model=options["seg_model"], cls_model=options["cls_model"],
        mal_model=options["mal_model"], runs_dir=options["runs_dir"], config=config, inference=inference,
        out=options["out"], report=options["report"], csv_path=options["csv_path"], dicom_out=options["dicom_out"],
    )  # fmt: skip


def _run(options: dict) -> None:
    from ct_pipeline.diagnosis.runtime import configure_process_memory

    if not options["book_style"]:  # the baseline runs as the book's code would: untuned
        configure_process_memory()  # first: before torch allocates anything

    from ct_pipeline.apps.diagnose import check_outputs, out_dir_lock
    from ct_pipeline.logfile import open_log_file
    from ct_pipeline.outputs import Place
    from ct_pipeline.preemption import StopRequests

    request = _request(options)
    log_path = _log_path(options, request.shard)
    check_outputs(  # before the log file is created under --out
        request, (None if log_path is None else Place("--log-file", log_path),), _annotations_read(options)
    )
    label = "diagnose" if request.shard.count == 1 else f"shard {request.shard}"
    with out_dir_lock(request), open_log_file(log_path, label) as log_file, StopRequests() as stop:
        summary, refusal = _show_events(request, options, log_file, stop)
    if refusal is not None:
        raise refusal  # the one series named was bad input: one error line and exit 2, as for ct info
    if options["evaluate"]:
        _print_evaluation(
            summary.results, options["annotations"], request.data_roots, request.config.nodule_threshold,
            options["json_output"],
        )  # fmt: skip
    if summary.n_failed:
        typer.echo(f"{summary.n_failed} of {summary.n_series} series failed; the others are done", err=True)
        raise typer.Exit(EXIT_SOME_FAILED)


def _show_events(request, options: dict, log_file, stop):
    """Run the application, printing each event; returns its summary and, when the one series
    named was refused for bad input or data, that error (left to the caller to say once)."""
    from ct_pipeline.apps.diagnose import DiagnoseSummary, FileWritten, ModelsLoaded, SeriesOutcome, run_diagnose

    json_output = options["json_output"]
    say = (lambda text: typer.echo(text, err=True)) if json_output else typer.echo
    has_malignancy, refusal = False, None
    progress = ProgressDisplay.on_stderr(options["quiet"])
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
            say(f"wrote {event.path}" + (f": {event.rows} candidates of {event.n_series} series" if event.rows is not None else ""))
        elif isinstance(event, DiagnoseSummary):
            return event, refusal
    raise AssertionError("run_diagnose ended without a summary")


def _show_outcome(outcome, threshold: float, has_malignancy: bool, json_output: bool) -> None:
    if outcome.status == "failed":
        typer.echo(f"failed {outcome.item.label}: {outcome.message}", err=True)
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


def _configs(options: dict):
    """The library's configs from the command line (``--book-style`` presets, the rest as given)."""
    from ct_pipeline.diagnosis.config import InferenceOptions

    tuning = dict(seg_threshold=options["seg_threshold"], nodule_threshold=options["threshold"])
    for name, option in (("seg_batch_size", "batch_size"), ("cls_batch_size", "cls_batch_size")):
        if options[option] is not None:
            tuning[name] = options[option]
    if options["book_style"]:
        inference = InferenceOptions.book_style(device=options["device"])
        if options["workers"] is not None:
            inference = dataclasses.replace(inference, workers=options["workers"])
        inference = dataclasses.replace(inference, threads=options["threads"], trust_model=options["trust_model"])
        return DiagnosisConfig.book_style(**tuning), inference
    config = DiagnosisConfig(
        merge_fraction=options["merge_fraction"], max_candidates=options["max_candidates"],
        restrict_to_lungs=options["lung_mask"], lung_margin_mm=options["lung_margin"], **tuning,
    )  # fmt: skip
    return config, InferenceOptions(
        device=options["device"], precision=options["precision"].value, workers=options["workers"],
        classifier_precision=options["cls_precision"].value if options["cls_precision"] is not None else None,
        threads=options["threads"], trust_model=options["trust_model"],
    )


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
            str(rank), f"{x:.1f}, {y:.1f}, {z:.1f}", f"{finding.diameter_mm:.1f}", f"{finding.nodule_prob:.3f}",
            malignancy, str(finding.n_merged),
        )  # fmt: skip
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


def _print_evaluation(results, annotations, roots, threshold: float, json_output: bool) -> None:
    from ct_pipeline.evaluation.diagnosed import evaluate_results, nodule_annotations
    from ct_pipeline.evaluation import render_confusion_table

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


def register(app: typer.Typer) -> None:
    app.command("diagnose", epilog=EPILOG)(diagnose_command)
