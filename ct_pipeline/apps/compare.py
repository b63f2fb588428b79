"""`ct compare` as an application: two scans of one patient in, a :class:`Comparison` out.

:func:`run_compare` loads both scans, takes each one's findings from an earlier ``ct diagnose``
result or diagnoses it (the models loaded once, only when needed), registers CURRENT to PRIOR
on the lungs, pairs the nodules and, with ``report``, draws them side by side.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.apps.diagnose import DiagnoseRequest
from ct_pipeline.diagnosis.progress import SeriesProgress
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.errors import BadInputError
from ct_pipeline.followup.comparison import Comparison
from ct_pipeline.followup.matching import MatchConfig
from ct_pipeline.followup.registration import RegistrationConfig
from ct_pipeline.volume import CtVolume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareRequest:
    """Which two scans, how to diagnose them, and where the report goes.

    Attributes:
        prior / current: series UIDs (under ``diagnose.data_roots``), DICOM folders or image files;
            PRIOR is the earlier scan.
        diagnose: the models, data roots and settings to diagnose with (its sources are unused).
        prior_results / current_results: an earlier ``ct diagnose`` result of that scan (a result
            file, or the ``--out`` folder holding it) instead of diagnosing it again.
        interval_days: days between the scans; None: from the DICOM StudyDates, when both have one.
        report: folder for an HTML page with both scans' pictures of each nodule.
    """

    prior: str
    current: str
    diagnose: DiagnoseRequest = DiagnoseRequest()
    prior_results: Path | None = None
    current_results: Path | None = None
    interval_days: float | None = None
    report: Path | None = None
    registration: RegistrationConfig = RegistrationConfig()
    matching: MatchConfig = MatchConfig()


def _read_results(path: Path, volume: CtVolume, which: str) -> DiagnosisResult:
    """The result of ``volume`` in ``path`` (a result file, or a ``ct diagnose --out`` folder)."""
    from ct_pipeline.diagnosis.result_files import read_result_file, result_file_name

    option = f"--{which.lower()}-results"
    if path.is_dir():
        path = path / result_file_name(volume.series_uid)
        if not path.is_file():
            raise BadInputError(f"{option}: no result of series {volume.series_uid} in that folder ({path.name})")
    elif not path.is_file():
        raise BadInputError(f"{option} {path}: no such file or folder")
    result = read_result_file(path)
    if result.series_uid != volume.series_uid:
        raise BadInputError(f"{option} {path} is of series {result.series_uid}, but {which} is {volume.series_uid}")
    _check_same_bytes(result, volume, option, path)
    return result


def _check_same_bytes(result: DiagnosisResult, volume: CtVolume, option: str, path: Path) -> None:
    """Refuse a result made from other bytes than ``volume``'s files hold now; warn when it cannot tell."""
    from ct_pipeline.loading.fingerprint import content_fingerprint, is_content_fingerprint

    recorded = (result.provenance or {}).get("source_fingerprint")
    if not is_content_fingerprint(recorded):
        log.warning(
            "%s %s records no content fingerprint of the files it was made from (written by hand or by an older "
            "ct), so it cannot be checked against series %s; it is used as given",
            option,
            path,
            volume.series_uid,
        )
        return
    if recorded != content_fingerprint(volume.source_files):
        raise BadInputError(
            f"{option} {path} was made from other bytes than series {volume.series_uid} holds now (its files changed "
            f"since); diagnose it again, or drop {option} to let ct compare diagnose it"
        )


def _diagnoser(request: DiagnoseRequest, progress: Callable[[SeriesProgress], None] | None):
    """A function diagnosing one volume with the request's models, loaded on first use."""
    from ct_pipeline.apps.diagnose import load_models
    from ct_pipeline.diagnosis.pipeline import diagnose
    from ct_pipeline.diagnosis.progress import no_progress
    from ct_pipeline.diagnosis.provenance import run_provenance, with_source

    loaded: list = []

    def run(volume: CtVolume, position: int) -> DiagnosisResult:
        if not loaded:
            models, _ = load_models(request)
            loaded.append(
                (models, run_provenance(models.paths, models.precision, request.config, models.seg.device.type))
            )
        models, record = loaded[0]
        stages = no_progress
        if progress is not None:

            def stages(stage, done, total):
                progress(SeriesProgress(volume.series_uid, position, 2, stage, done, total))

        result = diagnose(volume, models, request.config, stages)
        return result.with_provenance(with_source(record, volume.source_files))

    return run


def _check_report_keeps_inputs(request: CompareRequest) -> None:
    """The report folder may hold none of the files compare reads (scans, earlier results, models)."""
    from ct_pipeline.apps.diagnose import read_places, source_places
    from ct_pipeline.outputs import ANYTHING, Place, refuse_overlaps

    scans = [*source_places("PRIOR", request.prior), *source_places("CURRENT", request.current)]
    results = [
        Place(option, path, ("*.json",) if path.is_dir() else ())
        for option, path in (("--prior-results", request.prior_results), ("--current-results", request.current_results))
        if path is not None
    ]
    refuse_overlaps([Place("--report", request.report, ANYTHING)], [*read_places(request.diagnose), *scans, *results])


def run_compare(request: CompareRequest, progress: Callable[[SeriesProgress], None] | None = None) -> Comparison:
    """Compare ``request.current`` with ``request.prior``; ``progress`` hears of each diagnosis'
    stages (series 1 and 2 of 2) and of the registration.

    Raises:
        BadInputError / NotFoundError / BadCheckpointError: bad scans, results or models.
    """
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.followup.comparison import compare_scans, scan_interval
    from ct_pipeline.followup.registration import register_scans
    from ct_pipeline.followup.volumes import remeasure_pairs
    from ct_pipeline.loading import load_ct
    from ct_pipeline.threads import thread_budget

    if request.report is not None:
        _check_report_keeps_inputs(request)
        check_writable(request.report, "--report", True)
    options = request.diagnose
    # Resolved once: a --threads beyond the CPUs is then capped with one warning, not one per stage.
    inference = dataclasses.replace(options.inference, threads=thread_budget(options.inference.threads).threads)
    options = dataclasses.replace(options, inference=inference)
    volumes = [
        load_ct(source, data_roots=options.data_roots, cache_dir=options.cache_dir, options=options.load)
        for source in (request.prior, request.current)
    ]
    if volumes[0].series_uid == volumes[1].series_uid:
        raise BadInputError(f"PRIOR and CURRENT are the same series ({volumes[0].series_uid}); give two scans")
    study_dates = tuple(v.meta.get("study_date", "") for v in volumes)
    scan_interval(*study_dates, request.interval_days)  # scans in the wrong order fail now, not after diagnosis
    diagnose = _diagnoser(options, progress)
    results = []
    for position, (volume, given, which) in enumerate(
        zip(volumes, (request.prior_results, request.current_results), ("PRIOR", "CURRENT")), start=1
    ):
        results.append(_read_results(given, volume, which) if given is not None else diagnose(volume, position))
    if progress is not None:
        progress(SeriesProgress(volumes[1].series_uid, 2, 2, "registration", 0, 0))
    registration = register_scans(*volumes, request.registration, thread_budget(options.inference.threads).threads)
    patient_ids = tuple(v.meta.get("patient_id", "") for v in volumes)
    comparison = compare_scans(
        *results,
        registration,
        study_dates=study_dates,
        patient_ids=patient_ids,  # type: ignore[arg-type]
        interval_days=request.interval_days,
        threshold=options.config.nodule_threshold,
        matching=request.matching,
    )
    comparison = remeasure_pairs(comparison, (volumes[0], results[0]), (volumes[1], results[1]))
    if request.report is not None:
        from ct_pipeline.reports.compare_report import write_compare_report

        write_compare_report(request.report, *volumes, comparison)
    return comparison
