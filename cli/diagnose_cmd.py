"""`ct diagnose`: find nodules in CT series and report them (console, JSON Lines, LUNA16 CSV, HTML)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from cli.diagnose_options import (
    AllSeriesOption,
    AnnotationsOption,
    BatchSizeOption,
    BookStyleOption,
    ClsBatchSizeOption,
    ClsPrecisionOption,
    ConcurrentBatchesOption,
    CsvOption,
    DicomOutOption,
    EvaluateOption,
    LogFileOption,
    LungMarginOption,
    LungMaskOption,
    MaxCandidatesOption,
    MergeFractionOption,
    MovedMergeOption,
    OutOption,
    PrecisionOption,
    ReportOption,
    SeriesArgument,
    SeriesFileOption,
    SeriesUidOption,
    ShardOption,
    TtaOption,
)
from cli.dicomweb_options import (
    CaBundleOption,
    DicomwebOption,
    ModalityOption,
    StoreOption,
    StudyDateOption,
    dicomweb_server,
    series_query,
)
from cli.options import (
    AllowUnevenOption,
    CacheDirOption,
    ClsModelOption,
    DataRootsOption,
    DeviceOption,
    JsonOption,
    MalModelOption,
    Precision,
    QuietOption,
    RunsDirOption,
    SegModelOption,
    SegThresholdOption,
    ThreadsOption,
    ThresholdOption,
    TrustModelOption,
)
from cli.output import EXIT_SOME_FAILED
from ct_pipeline.diagnosis.config import DiagnosisConfig

EPILOG = (
    "Examples: ct diagnose /data/dicom/patient1 --seg-model seg.ckpt --cls-model cls.ckpt --report report/ | "
    "ct diagnose --all --data-root /data/luna16 --out results/ --shard 0/8 --json | "
    "ct merge results/ --csv all.csv | "
    "ct diagnose --all --dicomweb http://pacs:8042/dicom-web --study-date 20240101-20241231 --shard 0/8 --out results/ "
    "--dicom-out objects/ --store. "
    "Exit codes: 0 done, 2 bad input, 3 some series failed (the others are done). "
    "Research software, not a medical device."
)
_DEFAULTS = DiagnosisConfig()


def diagnose_command(
    series: SeriesArgument = None,
    seg_model: SegModelOption = None,
    cls_model: ClsModelOption = None,
    mal_model: MalModelOption = None,
    trust_model: TrustModelOption = False,
    runs_dir: RunsDirOption = Path("runs"),
    threshold: ThresholdOption = _DEFAULTS.nodule_threshold,
    seg_threshold: SegThresholdOption = _DEFAULTS.seg_threshold,
    merge_fraction: MergeFractionOption = _DEFAULTS.merge_fraction,
    max_candidates: MaxCandidatesOption = _DEFAULTS.max_candidates,
    tta: TtaOption = _DEFAULTS.classifier_flips,
    lung_mask: LungMaskOption = _DEFAULTS.restrict_to_lungs,
    lung_margin: LungMarginOption = _DEFAULTS.lung_margin_mm,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    cls_precision: ClsPrecisionOption = None,
    batch_size: BatchSizeOption = None,
    cls_batch_size: ClsBatchSizeOption = None,
    concurrent_batches: ConcurrentBatchesOption = None,
    threads: ThreadsOption = None,
    book_style: BookStyleOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    csv_path: CsvOption = None,
    dicom_out: DicomOutOption = None,
    report: ReportOption = None,
    evaluate: EvaluateOption = False,
    annotations: AnnotationsOption = None,
    all_series: AllSeriesOption = False,
    series_file: SeriesFileOption = None,
    shard: ShardOption = None,
    out: OutOption = None,
    log_file: LogFileOption = None,
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    series_uid: SeriesUidOption = None,
    allow_uneven_spacing: AllowUnevenOption = False,
    _merge: MovedMergeOption = None,
    dicomweb: DicomwebOption = None,
    ca_bundle: CaBundleOption = None,
    store: StoreOption = False,
    modality: ModalityOption = "CT",
    study_date: StudyDateOption = None,
) -> None:
    """Find lung nodules: segment the slices, group candidates, classify them, merge duplicates, report.

    Prints a table of the findings at or above --threshold and the time of each stage; --json prints one JSON object per series instead. Research software, not a medical device.
    """
    from ct_pipeline.diagnosis.runtime import configure_process_memory

    if not book_style:  # the baseline runs as the book's code would: untuned
        configure_process_memory()  # first: before torch allocates anything

    from ct_pipeline.apps.diagnose import DiagnoseRequest
    from ct_pipeline.loading import LoadOptions
    from ct_pipeline.paths import resolve_data_roots
    from ct_pipeline.sharding import Shard

    config = _config(
        book_style,
        seg_threshold=seg_threshold,
        threshold=threshold,
        merge_fraction=merge_fraction,
        max_candidates=max_candidates,
        tta=tta,
        lung_mask=lung_mask,
        lung_margin=lung_margin,
        batch_size=batch_size,
        cls_batch_size=cls_batch_size,
    )
    inference = _inference(
        book_style,
        device=device,
        precision=precision,
        cls_precision=cls_precision,
        concurrent_batches=concurrent_batches,
        threads=threads,
        trust_model=trust_model,
    )
    request = DiagnoseRequest(
        sources=tuple(series or ()),
        series_file=series_file,
        all_series=all_series,
        data_roots=tuple(resolve_data_roots(data_root)),
        cache_dir=cache_dir,
        load=LoadOptions(
            allow_uneven_spacing=allow_uneven_spacing,
            series_uid=series_uid,
            dicomweb=dicomweb_server(dicomweb, ca_bundle),
        ),
        store=store,
        query=series_query(modality, study_date),
        shard=Shard.parse(shard),
        seg_model=seg_model,
        cls_model=cls_model,
        mal_model=mal_model,
        runs_dir=runs_dir,
        config=config,
        inference=inference,
        out=out,
        report=report,
        csv_path=csv_path,
        dicom_out=dicom_out,
    )
    _run(request, log_file, annotations if evaluate else None, evaluate=evaluate, json_output=json_output, quiet=quiet)


def _config(
    book_style: bool,
    *,
    seg_threshold: float,
    threshold: float,
    merge_fraction: float,
    max_candidates: int,
    tta: int,
    lung_mask: bool,
    lung_margin: float,
    batch_size: int | None,
    cls_batch_size: int | None,
) -> DiagnosisConfig:
    """What is computed: --book-style's presets (thresholds and batch sizes as given), else the options."""
    sizes = {name: size for name, size in (("seg_batch_size", batch_size), ("cls_batch_size", cls_batch_size)) if size}
    if book_style:
        return DiagnosisConfig.book_style(seg_threshold=seg_threshold, nodule_threshold=threshold, **sizes)
    return DiagnosisConfig(
        seg_threshold=seg_threshold,
        nodule_threshold=threshold,
        merge_fraction=merge_fraction,
        max_candidates=max_candidates,
        classifier_flips=tta,
        restrict_to_lungs=lung_mask,
        lung_margin_mm=lung_margin,
        **sizes,
    )


def _inference(
    book_style: bool,
    *,
    device: str,
    precision: Precision,
    cls_precision: Precision | None,
    concurrent_batches: int | None,
    threads: int | None,
    trust_model: bool,
):
    """How the networks run: --book-style's way (one batch at a time unless told), else the options."""
    from ct_pipeline.diagnosis.config import InferenceOptions

    if book_style:
        return dataclasses.replace(
            InferenceOptions.book_style(device),
            workers=concurrent_batches or 1,
            threads=threads,
            trust_model=trust_model,
        )
    return InferenceOptions(
        device=device,
        precision=precision.value,
        workers=concurrent_batches,
        threads=threads,
        classifier_precision=None if cls_precision is None else cls_precision.value,
        trust_model=trust_model,
    )


def _run(
    request, log_file: Path | None, annotations: Path | None, *, evaluate: bool, json_output: bool, quiet: bool
) -> None:
    """Check the outputs, lock --out, run, show; exit 3 when some series failed."""
    from cli.diagnose_output import print_evaluation, show_events
    from ct_pipeline.apps.diagnose import check_outputs, log_path, out_dir_lock
    from ct_pipeline.logfile import open_log_file
    from ct_pipeline.outputs import Place
    from ct_pipeline.preemption import StopRequests

    log = log_path(request, log_file)
    # The default annotations (the data roots' tables) are among the run's inputs already.
    read = () if annotations is None else (Place("--annotations", annotations),)
    check_outputs(request, (None if log is None else Place("--log-file", log),), read)  # before the log is created
    label = "diagnose" if request.shard.count == 1 else f"shard {request.shard}"
    with out_dir_lock(request), open_log_file(log, label) as opened, StopRequests() as stop:
        summary, refusal = show_events(request, opened, stop, json_output=json_output, quiet=quiet)
    if refusal is not None:
        raise refusal  # the one series named was bad input: one error line and exit 2, as for ct info
    if evaluate:
        print_evaluation(summary.results, annotations, request.data_roots, request.config.nodule_threshold, json_output)
    if summary.n_failed:
        typer.echo(f"{summary.n_failed} of {summary.n_series} series failed; the others are done", err=True)
        raise typer.Exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    app.command("diagnose", epilog=EPILOG)(diagnose_command)
