"""Many series in one run: selection (--all, --series-file, --shard), resumable results, failures.

Each series is diagnosed on its own: a series that fails (unreadable, not a CT) is reported
and the batch goes on. With an output folder every finished series is written at once, and
atomically, to ``<out>/<series>.json``; a series whose file is already there is skipped, so a
killed batch (or an array job re-run) resumes where it stopped. With a log file (one per array
task, :mod:`ct_pipeline.logfile`) every outcome is also written there as one line.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.diagnosis.networks import DiagnosisModels
from ct_pipeline.diagnosis.pipeline import diagnose
from ct_pipeline.diagnosis.progress import SeriesProgress, StageProgress, no_progress
from ct_pipeline.diagnosis.provenance import differences, run_provenance, with_source
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.errors import BadDataError, BadInputError, CtError
from ct_pipeline.loading import LoadOptions, entry_files, find_entry, load_ct, load_entry
from ct_pipeline.logfile import NO_LOG_FILE, LogFile
from ct_pipeline.pacs.fetch import SeriesQuery
from ct_pipeline.pacs.server import DicomwebServer
from ct_pipeline.paths import validate_series_uid
from ct_pipeline.preemption import StopRequests
from ct_pipeline.sharding import Shard
from ct_pipeline.volume import CtVolume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One series to diagnose.

    Attributes:
        label: what the user gave (a UID, a folder, a file), for messages.
        load: reads the volume.
        key: names the result file; the series UID when known before loading, else None
            (found by :func:`series_key` when the batch starts the item).
        files: every file ``load`` would read, found without reading pixels; a result in
            ``--out`` is reused only when their bytes are the ones it was made from (None: never).
    """

    label: str
    load: Callable[[], CtVolume]
    key: str | None = None
    files: Callable[[], Sequence[str]] | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one item: status "done", "skipped" (result file existed) or "failed".

    ``refusal`` is the one-line error of a series refused for what the user can fix (bad input
    or data, an output that cannot be written; not an internal failure), so a command that named
    only this series can answer with it.
    """

    item: BatchItem
    status: str
    result: DiagnosisResult | None = None
    message: str = ""
    refusal: CtError | None = None


def series_key(source: str, options: LoadOptions = LoadOptions()) -> str:
    """The series UID ``source`` stands for, found without reading pixels.

    A UID is itself; an .mhd or image file is its name without suffix (as the loaders name
    it); a DICOM file or folder is read for its SeriesInstanceUID.

    Raises:
        BadInputError / NotFoundError: not a path and not a valid UID, or a folder with several series.
    """
    from ct_pipeline.loading.dicom import discover_series
    from ct_pipeline.loading.image_file import image_format, image_stem

    path = Path(source)
    if path.is_dir():
        series = discover_series(path)
        uids = [s.series_uid for s in series]
        if options.series_uid is not None and options.series_uid in uids:
            return options.series_uid
        if not uids:
            raise BadInputError(
                f"{path}: no DICOM files in this folder (or below it); give a folder of DICOM slices, or a UID with --data-root"
            )
        if len(uids) != 1:
            raise BadInputError(
                f"{path}: expected one DICOM series, found {', '.join(uids)}; name one with --series UID"
            )
        return uids[0]
    if path.is_file():
        if path.name.lower().endswith(".mhd"):
            return path.stem
        if image_format(path) is not None:
            return image_stem(path)
        series = [s for s in discover_series(path.parent) if any(h.path == str(path) for h in s.headers)]
        if series:
            return series[0].series_uid
        raise BadInputError(f"{path}: not a CT image (expected a DICOM file or folder, .mhd, .nrrd, .nii or .nii.gz)")
    return validate_series_uid(source)


def items_from_sources(
    sources: Sequence[str], data_roots: Sequence[Path], cache_dir: Path | None, options: LoadOptions
) -> list[BatchItem]:
    """One item per source (UID under ``data_roots``, DICOM folder or image file), in the given order.

    Raises:
        BadInputError: a source is neither an existing path nor a valid series UID (checked
            now, before any model loads).
    """
    for source in sources:
        if not Path(source).exists():
            validate_series_uid(source)

    def loader(source: str) -> Callable[[], CtVolume]:
        return lambda: load_ct(source, data_roots=data_roots, cache_dir=cache_dir, options=options)

    def files(source: str) -> Callable[[], Sequence[str]]:
        return lambda: entry_files(find_entry(source, data_roots=data_roots, cache_dir=cache_dir, options=options))

    return [BatchItem(label=source, load=loader(source), files=files(source)) for source in sources]


def items_from_roots(data_roots: Sequence[Path], cache_dir: Path | None, options: LoadOptions) -> list[BatchItem]:
    """Every series under ``data_roots`` (``--all``), sorted by UID."""
    from ct_pipeline.loading.series_index import require_some_series, scan_roots

    if not data_roots:
        raise BadInputError("--all needs data roots: pass --data-root DIR or set CT_DATA_ROOT")
    entries = scan_roots(data_roots, cache_dir)
    require_some_series(entries, data_roots)

    def loader(entry) -> Callable[[], CtVolume]:
        return lambda: load_entry(entry, options)

    def files(entry) -> Callable[[], Sequence[str]]:
        return lambda: entry_files(entry)

    return [
        BatchItem(label=uid, load=loader(entries[uid]), key=uid, files=files(entries[uid])) for uid in sorted(entries)
    ]


def items_from_server(
    server: DicomwebServer, query: SeriesQuery, data_roots: Sequence[Path], cache_dir: Path | None, options: LoadOptions
) -> list[BatchItem]:
    """Every series ``query`` finds on ``server`` (``--all --dicomweb``), each read from the data
    roots when there, else fetched when its turn comes."""
    from ct_pipeline.pacs.fetch import list_series
    from ct_pipeline.paths import is_series_uid

    uids = [remote.series_uid for remote in list_series(server, query)]
    bad = [uid for uid in uids if not is_series_uid(uid)]
    if bad:
        log.warning(
            "DICOMweb server %s listed %d series with malformed UIDs (e.g. %r); left out", server.url, len(bad), bad[0]
        )
    return items_from_sources([uid for uid in uids if is_series_uid(uid)], data_roots, cache_dir, options)


def select_shard(items: Sequence[BatchItem], shard: Shard) -> list[BatchItem]:
    """The items of ``shard``, chosen on their labels (stable whatever order they came in)."""
    by_label: dict[str, BatchItem] = {}
    for item in items:
        by_label.setdefault(item.label, item)  # the same series named twice is diagnosed once
    return [by_label[label] for label in shard.select(list(by_label))]


def run_batch(
    items: Sequence[BatchItem],
    models: DiagnosisModels,
    config: DiagnosisConfig,
    *,
    out_dir: Path | None = None,
    key_options: LoadOptions = LoadOptions(),
    after: Callable[[CtVolume, DiagnosisResult], DiagnosisResult] | None = None,
    log_file: LogFile = NO_LOG_FILE,
    stop: StopRequests | None = None,
    progress: Callable[[SeriesProgress], None] | None = None,
    prefetch: bool = True,
) -> Iterator[BatchOutcome]:
    """Diagnose ``items`` one by one, yielding each outcome as soon as it is known.

    Args:
        items: the series.
        models: loaded once for the whole batch.
        config: the diagnosis parameters.
        out_dir: where per-series results go (None: nowhere; nothing is skipped).
        key_options: how :func:`series_key` reads DICOM folders.
        after: called with each new result (e.g. to draw its report); returns the result to
            keep, possibly with more timings. Its failures fail the series.
        log_file: gets one line per outcome (:func:`outcome_line`).
        stop: checked between series (raises :class:`~ct_pipeline.preemption.Terminated`);
            the series in progress is finished and written first.
        progress: told of each series' stages as they start and of the networks' batches;
            stages "load", the pipeline's (see :mod:`~ct_pipeline.diagnosis.pipeline`) and
            "report" (the ``after`` step).
        prefetch: read the next series in a background thread while the networks run on this
            one (two volumes in memory instead of one). Only a series that will be diagnosed is
            read ahead: one whose result file is not in ``out_dir`` yet.

    A failure of one series is yielded as status "failed" with a one-line message; the batch
    goes on. KeyboardInterrupt stops it. A series whose result file in ``out_dir`` was made
    with other models, settings or source files is diagnosed again (status "done", the reason
    in ``message``); only true repeats are "skipped".
    """
    record = run_provenance(models.paths, models.precision, config, models.seg.device.type)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ct-read-ahead") if prefetch else None
    ahead: dict[int, Future] = {}  # item index -> its volume, being read

    def read_ahead(index: int) -> None:
        if reader is not None and index < len(items) and _will_be_diagnosed(items[index], out_dir):
            ahead[index] = reader.submit(items[index].load)

    try:
        for index, item in enumerate(items):
            if stop is not None:
                stop.check()
            stage_progress = no_progress
            if progress is not None:
                stage_progress = functools.partial(_series_progress, progress, item.label, index + 1, len(items))
            read = ahead.pop(index).result if index in ahead else item.load
            outcome = _diagnose_item(
                item,
                models,
                config,
                out_dir,
                key_options,
                after,
                record,
                stage_progress,
                read=read,
                on_read=functools.partial(read_ahead, index + 1),
            )
            level = logging.ERROR if outcome.status == "failed" else logging.INFO
            log_file.line(outcome_line(outcome, config.nodule_threshold), level)
            yield outcome
    finally:
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)


def _will_be_diagnosed(item: BatchItem, out_dir: Path | None) -> bool:
    """Whether ``item`` is sure to be read: no result file can make it a "skipped" one."""
    from ct_pipeline.diagnosis.result_files import result_file_name

    if out_dir is None:
        return True
    return item.key is not None and not (Path(out_dir) / result_file_name(item.key)).is_file()


def outcome_line(outcome: BatchOutcome, threshold: float) -> str:
    """One line for a log, e.g. ``done UID: 3 candidates, 2 at nodule p >= 0.5, 4.1 s``,
    ``skipped UID: already in DIR/UID.json`` or ``failed UID: <the error>``."""
    label = outcome.item.label
    if outcome.status != "done" or outcome.result is None:
        return f"{outcome.status} {label}: {outcome.message}"
    result = outcome.result
    named = "" if result.series_uid == label else f" (series {result.series_uid})"
    redone = f" ({outcome.message})" if outcome.message else ""
    return (
        f"done {label}{named}: {len(result.findings)} candidates, {len(result.nodules(threshold))} at nodule "
        f"p >= {threshold:g}, {sum(result.timings_s.values()):.1f} s{redone}"
    )


def _series_progress(
    sink: Callable[[SeriesProgress], None], label: str, position: int, n_series: int, stage: str, done: int, total: int
) -> None:
    sink(SeriesProgress(label, position, n_series, stage, done, total))


def _diagnose_item(
    item: BatchItem,
    models: DiagnosisModels,
    config: DiagnosisConfig,
    out_dir: Path | None,
    key_options: LoadOptions,
    after: Callable[[CtVolume, DiagnosisResult], DiagnosisResult] | None,
    record: dict,
    progress: StageProgress = no_progress,
    read: Callable[[], CtVolume] | None = None,
    on_read: Callable[[], None] = lambda: None,
) -> BatchOutcome:
    """Diagnose one item, or find its result file made the same way (``record``: the batch's
    provenance); a failure becomes a "failed" outcome. ``read`` gives the volume (default
    ``item.load``; a volume read ahead), ``on_read`` is called once it is in memory."""
    from ct_pipeline.diagnosis.result_files import read_result_file, result_file_name, write_result_file

    try:
        key = item.key or series_key(item.label, key_options)
        if out_dir is not None:
            done_file = Path(out_dir) / result_file_name(key)
            redo_reason = ""
            if done_file.is_file():
                try:
                    recorded = read_result_file(done_file)
                except BadDataError as err:
                    log.warning("%s; diagnosing it again", err)
                else:
                    current_files = item.files() if item.files is not None else ()
                    changed = differences(recorded.provenance, with_source(record, current_files))
                    if not changed:
                        return BatchOutcome(item, "skipped", recorded, f"already in {done_file}")
                    redo_reason = f"{done_file} was made with another {', '.join(changed)}; diagnosing it again"
        progress("load", 0, 0)
        started = time.perf_counter()
        volume = (read or item.load)()
        load_s = time.perf_counter() - started
        on_read()
        result = diagnose(volume, models, config, progress).with_timings({"load": load_s}, first=True)
        result = result.with_provenance(with_source(record, volume.source_files))
        if after is not None:
            progress("report", 0, 0)
            result = after(volume, result)
        if out_dir is not None:
            write_result_file(Path(out_dir), key, result)
        del volume  # the next series may already be in memory (read ahead); not three
        return BatchOutcome(item, "done", result, redo_reason if out_dir is not None else "")
    except CtError as err:
        return BatchOutcome(item, "failed", message=str(err), refusal=err)
    except (OSError, RuntimeError, ValueError, MemoryError) as err:
        log.debug("series %s failed", item.label, exc_info=True)
        return BatchOutcome(item, "failed", message=f"{type(err).__name__}: {err}")
