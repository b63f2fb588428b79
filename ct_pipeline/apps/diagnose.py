"""`ct diagnose` as an application: a typed request in, typed events out, no printing.

:func:`run_diagnose` gathers the series (UIDs, folders, files, ``--all``), takes this shard's
share, finds and loads the checkpoints, diagnoses series by series (resumable, see
:mod:`ct_pipeline.diagnosis.batch`), writes the CSVs and the report, and yields what happened as
it happens; the CLI decides how to show it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ct_pipeline.diagnosis.batch import BatchOutcome
from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.progress import SeriesProgress
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.errors import BadInputError
from ct_pipeline.loading import LoadOptions
from ct_pipeline.logfile import NO_LOG_FILE, LogFile
from ct_pipeline.outputs import ANYTHING, Place, data_root_places, refuse_overlaps
from ct_pipeline.pacs.fetch import SeriesQuery
from ct_pipeline.pacs.store import StoreOutcome
from ct_pipeline.preemption import StopRequests
from ct_pipeline.sharding import Shard


@dataclass(frozen=True)
class DiagnoseRequest:
    """What to diagnose, with which models, and where the results go.

    Attributes:
        sources: series UIDs (under ``data_roots``), DICOM folders or image files.
        series_file: more sources, one per line.
        all_series: every series under ``data_roots``.
        shard: this array task's share of the series.
        seg_model / cls_model / mal_model: checkpoints; None: the newest of the kind under
            ``runs_dir`` (malignancy: only if there is one).
        out: per-series results (resumable) and ``findings.csv``; None: nowhere.
        report: HTML report folder; csv_path: one LUNA16 CSV of every candidate.
        dicom_out: DICOM Segmentation and Structured Report of each series' nodules (label map
            and JSON for non-DICOM input; see :mod:`ct_pipeline.reports.dicom_findings`).
        store: send the SEG and SR in ``dicom_out`` to ``load.dicomweb`` (STOW-RS), each once.
        query: with ``all_series`` and ``load.dicomweb``: which of the server's series to walk.
    """

    sources: tuple[str, ...] = ()
    series_file: Path | None = None
    all_series: bool = False
    data_roots: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    load: LoadOptions = LoadOptions()
    shard: Shard = Shard()
    seg_model: Path | None = None
    cls_model: Path | None = None
    mal_model: Path | None = None
    runs_dir: Path | None = None
    config: DiagnosisConfig = DiagnosisConfig()
    inference: InferenceOptions = InferenceOptions()
    out: Path | None = None
    report: Path | None = None
    csv_path: Path | None = None
    dicom_out: Path | None = None
    store: bool = False
    query: SeriesQuery = SeriesQuery()

    @property
    def names_one_series(self) -> bool:
        """One series named on the command line: refusing it is the command's bad input (exit 2),
        not one failure in a batch (exit 3)."""
        return len(self.sources) == 1 and self.series_file is None and not self.all_series


@dataclass(frozen=True)
class ModelsLoaded:
    """The checkpoints in use (by option name) and the thread budget, in words."""

    paths: dict[str, Path]
    threads: str
    has_malignancy: bool


@dataclass(frozen=True)
class SeriesOutcome:
    """One series done, skipped (already in ``out``) or failed."""

    outcome: BatchOutcome


@dataclass(frozen=True)
class FileWritten:
    """An output file: a CSV of ``rows`` candidates of ``n_series`` series, or the report (rows None)."""

    path: Path
    rows: int | None = None
    n_series: int = 0


@dataclass(frozen=True)
class FilesStored:
    """Objects sent to the DICOMweb server after a series (``--store``): what it accepted now, and
    what an earlier run had stored already."""

    outcomes: tuple[StoreOutcome, ...]


@dataclass(frozen=True)
class NothingToStore:
    """``--store`` for a series that is not DICOM (``format``: e.g. "mhd"): its findings have no
    SEG or SR to send, so the server got nothing of it (the run goes on)."""

    series_uid: str
    format: str


@dataclass
class DiagnoseSummary:
    """The last event: every result kept, and how many series ended how."""

    n_series: int
    results: list[DiagnosisResult] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"done": 0, "skipped": 0, "failed": 0})

    @property
    def n_failed(self) -> int:
        return self.counts["failed"]


DiagnoseEvent = ModelsLoaded | SeriesOutcome | FileWritten | FilesStored | NothingToStore | DiagnoseSummary


# What a run writes in --out: per-series results, the findings tables, logs, the run locks.
OUT_WRITES = ("*.json", "findings.csv", "findings.csv.provenance", "findings.shard-*", "logs/*", ".ct-run*.lock")


def written_places(request: DiagnoseRequest) -> tuple[Place | None, ...]:
    """Where the run writes, by option (None: not given)."""

    def place(option: str, path: Path | None, patterns: tuple[str, ...] = ()) -> Place | None:
        return None if path is None else Place(option, path, patterns)

    return (
        place("--out", request.out, OUT_WRITES),
        place("--report", request.report, ANYTHING),
        place("--dicom-out", request.dicom_out, ANYTHING),
        place("--csv", request.csv_path),
    )


def source_places(option: str, source: str) -> tuple[Place, ...]:
    """The files a series given as a path is read from (none for a UID: its data root covers it)."""
    from ct_pipeline.errors import CtError
    from ct_pipeline.loading.image_file import image_stem
    from ct_pipeline.loading.mhd import mhd_data_files

    path = Path(source)
    if path.is_dir():  # a DICOM folder: every file in it may be a slice
        return (Place(option, path, ANYTHING),)
    if not path.is_file():
        return ()
    beside = Place(option, path.parent, (f"{image_stem(path).lower()}.*",))
    if not path.name.lower().endswith(".mhd"):
        return (beside,)
    try:  # the data file is whatever the header names, which may lie elsewhere
        return (beside, *(Place(option, data_file) for data_file in mhd_data_files(path)))
    except CtError:  # a broken header: the loader says what is wrong with it, in its turn
        return (beside,)


def read_places(request: DiagnoseRequest) -> tuple[Place | None, ...]:
    """What the run reads, by option: data roots, series given as paths, the series list, checkpoints."""
    places: list[Place | None] = list(data_root_places(request.data_roots))
    places += [place for source in request.sources for place in source_places("SERIES", source)]
    places.append(None if request.series_file is None else Place("--series-file", request.series_file))
    for option, model in (
        ("--seg-model", request.seg_model),
        ("--cls-model", request.cls_model),
        ("--mal-model", request.mal_model),
    ):
        places.append(None if model is None else Place(option, model))
    places.append(None if request.runs_dir is None else Place("--runs-dir", request.runs_dir, ("*.ckpt",)))
    return tuple(places)


def check_outputs(
    request: DiagnoseRequest, also_written: tuple[Place | None, ...] = (), also_read: tuple[Place | None, ...] = ()
) -> None:
    """Every place the run will write, checked before any model loads or series is read: writable,
    and replacing no file the run reads (``also_*``: the CLI's own options, e.g. --log-file, --annotations).
    The device is checked here too, so a run refused for it creates and locks no --out."""
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.devices import resolve_device

    resolve_device(request.inference.device)
    if request.store and (request.dicom_out is None or request.load.dicomweb is None):
        raise BadInputError("--store sends the --dicom-out files to the --dicomweb server; give both with it")
    if request.out is not None and request.out.exists() and not request.out.is_dir():
        raise BadInputError(f"--out {request.out} exists and is not a folder; give a folder for the per-series results")
    refuse_overlaps(written_places(request) + also_written, read_places(request) + also_read)
    for option, path, is_folder in (
        ("--out", request.out, True),
        ("--report", request.report, True),
        ("--csv", request.csv_path, False),
        ("--dicom-out", request.dicom_out, True),
    ):
        if path is not None:
            check_writable(path, option, is_folder)


def log_path(request: DiagnoseRequest, log_file: Path | None) -> Path | None:
    """``log_file``, else one log per shard under ``request.out`` (a re-run of the task appends to it)."""
    if log_file is not None or request.out is None:
        return log_file
    shard = request.shard
    return request.out / "logs" / ("diagnose.log" if shard.count == 1 else f"shard-{shard.index}-of-{shard.count}.log")


# What `ct merge` writes in --out: the merged table and its provenance side file.
OUT_MERGE_WRITES = ("findings.csv", "findings.csv.provenance")


def merge_results(
    merge_dir: Path, csv_path: Path | None, out: Path | None, allow_mixed: bool, also_read: tuple[Place, ...] = ()
) -> list[tuple[Path, int, int]]:
    """``ct merge``: ``merge_dir``'s results as one table in ``csv_path`` and/or
    ``out/findings.csv`` (neither: ``merge_dir/findings.csv``), after refusing any output over an input.

    Returns:
        (CSV path, number of series, number of rows) per table written.
    """
    from ct_pipeline.diagnosis.result_files import merge_result_files

    refuse_overlaps(
        [
            None if csv_path is None else Place("--csv", csv_path),
            None if out is None else Place("--out", out, OUT_MERGE_WRITES),
        ],
        [Place("DIR", merge_dir, ("*.json",)), *also_read],
    )
    # --out names the folder of the merged findings.csv, as it does for a run's own table.
    targets = [target for target in (csv_path, out and out / "findings.csv") if target is not None] or [None]
    return [merge_result_files(merge_dir, target, allow_mixed) for target in targets]


def out_dir_lock(request: DiagnoseRequest):
    """The lock of ``request.out`` (none without it): one per shard, as array tasks share one --out."""
    from contextlib import nullcontext

    from ct_pipeline.run_lock import lock_name, output_lock

    if request.out is None:
        return nullcontext()
    shard = request.shard
    return output_lock(
        request.out, "--out", lock_name("" if shard.count == 1 else f"shard-{shard.index}-of-{shard.count}")
    )


def _items(request: DiagnoseRequest) -> list:
    from ct_pipeline.diagnosis.batch import items_from_roots, items_from_server, items_from_sources, select_shard
    from ct_pipeline.paths import read_series_list, resolve_cache_dir

    cache_dir = resolve_cache_dir(request.cache_dir)
    sources = list(request.sources)
    if request.series_file is not None:
        sources += read_series_list(request.series_file)
    items = items_from_sources(sources, request.data_roots, cache_dir, request.load)
    server = request.load.dicomweb
    if request.all_series and (request.data_roots or server is None):
        items += items_from_roots(request.data_roots, cache_dir, request.load)
    if request.all_series and server is not None:
        items += items_from_server(server, request.query, request.data_roots, cache_dir, request.load)
    if not items:
        raise BadInputError(
            "nothing to diagnose: give SERIES (UIDs, DICOM folders, image files), --all or --series-file"
        )
    return select_shard(items, request.shard)


def load_models(request: DiagnoseRequest) -> tuple:
    """The checkpoints `request` names (or the newest under its runs folder), loaded under its
    thread budget, and a `ModelsLoaded` event saying which."""
    import torch

    from ct_pipeline.diagnosis.networks import load_diagnosis_models, resolve_checkpoint
    from ct_pipeline.threads import thread_budget

    seg = resolve_checkpoint(request.seg_model, "seg", request.runs_dir)
    cls = resolve_checkpoint(request.cls_model, "cls", request.runs_dir)
    mal = resolve_checkpoint(request.mal_model, "mal", request.runs_dir, required=False)
    budget = thread_budget(request.inference.threads)
    torch.set_num_threads(budget.threads)  # one batch at a time uses them all; parallel ones run one each
    # The resolved budget, so that the models' default worker count is taken from it, not worked out again.
    inference = dataclasses.replace(request.inference, threads=budget.threads)
    models = load_diagnosis_models(seg, cls, mal, inference)  # type: ignore[arg-type]
    paths = {
        option: path for option, path in (("--seg-model", seg), ("--cls-model", cls), ("--mal-model", mal)) if path
    }
    loaded = ModelsLoaded(
        paths, budget.describe(models.workers if models.workers > 1 else 0, "batch thread"), mal is not None
    )
    return models, loaded


def run_diagnose(
    request: DiagnoseRequest,
    log_file: LogFile = NO_LOG_FILE,
    stop: StopRequests | None = None,
    progress: Callable[[SeriesProgress], None] | None = None,
) -> Iterator[DiagnoseEvent]:
    """Diagnose what ``request`` names; yields :class:`ModelsLoaded`, then a :class:`SeriesOutcome`
    per series as it ends, a :class:`FileWritten` per output, and last a :class:`DiagnoseSummary`.
    ``progress`` hears of every stage of every series while it runs (between those events).

    Raises:
        BadInputError / BadCheckpointError / NotFoundError: before any series is diagnosed.
        Terminated: a stop signal, between series (finished ones are kept).
    """
    from ct_pipeline.diagnosis.batch import run_batch
    from ct_pipeline.reports.report import ReportWriter

    check_outputs(request)
    items = _items(request)
    log_file.line(f"{len(items)} series in shard {request.shard}")
    models, loaded = load_models(request)
    log_file.line(loaded.threads)
    yield loaded
    report = ReportWriter(request.report, request.config.nodule_threshold) if request.report is not None else None
    summary = DiagnoseSummary(n_series=len(items))
    dicom_writer = _dicom_writer(request)
    batch = run_batch(
        items,
        models,
        request.config,
        out_dir=request.out,
        key_options=request.load,
        after=_after_each(report, dicom_writer),
        log_file=log_file,
        stop=stop,
        progress=progress,
    )
    for outcome in batch:
        summary.counts[outcome.status] += 1
        if outcome.status != "failed":
            summary.results.append(outcome.result)
        if dicom_writer is not None and dicom_writer.stored:
            yield FilesStored(tuple(dicom_writer.stored))
            dicom_writer.stored.clear()
        if dicom_writer is not None and dicom_writer.not_stored:
            yield from (NothingToStore(uid, kind) for uid, kind in dicom_writer.not_stored)
            dicom_writer.not_stored.clear()
        yield SeriesOutcome(outcome)
    yield from _write_outputs(request, summary.results, report)
    log_file.line(
        f"finished: {', '.join(f'{n} {status}' for status, n in summary.counts.items())} of {len(items)} series"
    )
    if summary.n_failed:
        log_file.finished_with(f"{summary.n_failed} of {len(items)} series failed")
    yield summary


def _dicom_writer(request: DiagnoseRequest):
    """The writer of the DICOM objects (and their sender, with ``--store``); None without --dicom-out."""
    if request.dicom_out is None:
        return None
    from ct_pipeline.reports.dicom_findings import DicomFindingsWriter

    store = request.load.dicomweb if request.store else None
    return DicomFindingsWriter(request.dicom_out, request.config.nodule_threshold, store)


def _after_each(report, dicom_writer):
    """What is written per series once it is diagnosed: the report's pages, the DICOM objects."""
    steps = [step for step in (report, dicom_writer) if step is not None]
    if not steps:
        return None

    def after(volume, result):
        for step in steps:
            result = step(volume, result)
        return result

    return after


def _write_outputs(request: DiagnoseRequest, results: list[DiagnosisResult], report) -> Iterator[FileWritten]:
    from ct_pipeline.diagnosis.result_files import write_luna16_csv

    if request.csv_path is not None:
        yield FileWritten(request.csv_path, write_luna16_csv(request.csv_path, results), len(results))
    if request.out is not None and results:
        shard = request.shard
        name = "findings.csv" if shard.count == 1 else f"findings.shard-{shard.index}-of-{shard.count}.csv"
        yield FileWritten(request.out / name, write_luna16_csv(request.out / name, results), len(results))
    if report is not None and report.entries:
        yield FileWritten(report.report_dir / "index.html")
