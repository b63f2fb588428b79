"""Another score for a diagnosed folder's candidates, and its LUNA16 FROC, without running anything again.

Every per-series result of ``ct diagnose --out DIR`` carries the table of its classified candidates
before merging (:mod:`ct_pipeline.diagnosis.features`). A score function maps that table to one
score per candidate; each scan's candidates are merged again by it, as diagnosis merges them
(:func:`~ct_pipeline.diagnosis.candidates.merge_groups`, with the run's recorded merge fraction),
and the kept ones are evaluated like the LUNA16 CSV diagnosis writes::

    from ct_pipeline.evaluation.rescore import rescore_folder

    report = rescore_folder(
        Path("OUT/findings"), Path("DATA/annotations.csv"), lambda c: c.nodule_prob * c.confident_fraction
    )
    report.overall.cpm

The score ``lambda c: c.detection_score`` gives back the FROC of the run's own ``findings.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ct_pipeline.diagnosis.candidates import kept_of_groups, merge_groups
from ct_pipeline.diagnosis.features import CandidateFeatures
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.diagnosis.result_files import read_result_file, result_files
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation.froc import FrocConfig, FrocReport, evaluate_froc
from ct_pipeline.evaluation.tables import FindingTable, read_nodules

ScoreFunction = Callable[[CandidateFeatures], np.ndarray]


def rescored_findings(
    results: Iterable[DiagnosisResult], score: ScoreFunction, merge_fraction: float | None = None
) -> FindingTable:
    """The findings ``results`` would have had with ``score``: each scan's classified candidates
    scored, merged again, the kept ones with their new score.

    Args:
        results: per-series results with their ``classified`` table.
        score: (table of N candidates) -> (N,) finite scores, higher is more likely a nodule.
        merge_fraction: as ``DiagnosisConfig.merge_fraction``; None: what each result records.

    Raises:
        BadDataError: a result has no table (written by an older ct) or no recorded merge fraction.
        BadInputError: the score function gave other than N finite numbers.
    """
    uids: list[str] = []
    centres: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for result in results:
        table = result.classified
        if table is None:
            raise BadDataError(
                f"the result of {result.series_uid} has no table of classified candidates (written by an older "
                "ct); diagnose it again"
            )
        fraction = merge_fraction
        if fraction is None:
            fraction = (result.provenance.get("settings") or {}).get("merge_fraction")
            if fraction is None:
                raise BadDataError(f"the result of {result.series_uid} records no merge fraction; pass merge_fraction")
        values = np.asarray(score(table), dtype=np.float64)
        if values.shape != (len(table),) or not np.isfinite(values).all():
            raise BadInputError(
                f"the score function gave {values.shape} values for the {len(table)} candidates of "
                f"{result.series_uid}; it must give one finite number per candidate"
            )
        kept, _ = kept_of_groups(merge_groups(table.center_xyz, table.diameter_mm, values, float(fraction)), values)
        uids += [result.series_uid] * len(kept)
        centres.append(table.center_xyz[kept])
        scores.append(values[kept])
    return FindingTable.from_arrays(
        np.array(uids, dtype=object),
        np.concatenate(centres) if centres else np.zeros((0, 3)),
        np.concatenate(scores) if scores else np.zeros(0),
    )


def rescore_folder(
    results_dir: Path,
    annotations: Path,
    score: ScoreFunction,
    *,
    series_uids: Sequence[str] | None = None,
    merge_fraction: float | None = None,
    config: FrocConfig | None = None,
) -> FrocReport:
    """The LUNA16 FROC of ``results_dir`` (a ``ct diagnose --out`` folder) re-scored with ``score``.

    Args:
        results_dir: the per-series result files.
        annotations: the LUNA16 ``annotations.csv`` of those series.
        score: see :func:`rescored_findings`.
        series_uids: the scans to evaluate; None: every diagnosed series.
        merge_fraction: see :func:`rescored_findings`.
        config: bootstrap, size groups (as ``ct evaluate``); None: its defaults.

    Raises:
        BadInputError: the folder holds no results.
    """
    results = [read_result_file(path) for path in result_files(results_dir)]
    if not results:
        raise BadInputError(f"{results_dir} holds no diagnosis results; give the --out folder of a ct diagnose run")
    findings = rescored_findings(results, score, merge_fraction)
    uids = tuple(series_uids) if series_uids is not None else tuple(result.series_uid for result in results)
    return evaluate_froc(findings, read_nodules(annotations), uids, config=config or FrocConfig())
