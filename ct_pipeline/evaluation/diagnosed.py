"""``ct diagnose --evaluate``: the book's confusion table of the diagnosed series against known nodules.

The nodules come from ``--annotations FILE`` (``annotations_with_malignancy.csv``, or
``annotations.csv`` with the malignancy table beside it), else from the LUNA16 tables found
in the data roots. The table itself is :func:`ct_pipeline.evaluation.confusion_table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation import ConfusionConfig, ConfusionReport, confusion_table
from ct_pipeline.luna16 import (
    ANNOTATIONS_CSV,
    MALIGNANCY_CSV,
    attach_malignancy,
    read_annotations,
    read_luna_csv,
    read_malignancy,
)


def _read_nodule_file(path: Path) -> pd.DataFrame:
    header = read_luna_csv(path, ["coordX", "coordY", "coordZ", "diameter_mm"]).columns
    if "mal_bool" in header:
        return read_malignancy(path)
    nodules = read_annotations(path)
    beside = path.parent / MALIGNANCY_CSV
    if beside.is_file():
        nodules["is_malignant"] = attach_malignancy(nodules, read_malignancy(beside))
    else:
        nodules["is_malignant"] = pd.Series(pd.NA, index=nodules.index, dtype="boolean")
    return nodules


def nodule_annotations(annotations: Path | None, data_roots: Sequence[Path]) -> pd.DataFrame:
    """Known nodules (series_uid, center_*_mm, diameter_mm, is_malignant) for the confusion table.

    Raises:
        BadInputError: none given and none found in the data roots.
        BadDataError: a damaged table.
    """
    if annotations is not None:
        if not Path(annotations).is_file():
            raise BadInputError(f"--annotations {annotations}: no such file; give annotations_with_malignancy.csv")
        return _read_nodule_file(Path(annotations))
    frames = []
    for root in data_roots:
        for name in (MALIGNANCY_CSV, ANNOTATIONS_CSV):
            if (Path(root) / name).is_file():
                frames.append(_read_nodule_file(Path(root) / name))
                break
    if not frames:
        where = ", ".join(str(r) for r in data_roots) or "(no data roots)"
        raise BadInputError(
            f"--evaluate needs known nodules: none of {MALIGNANCY_CSV}, {ANNOTATIONS_CSV} under {where}; "
            "pass --annotations FILE"
        )
    return pd.concat(frames, ignore_index=True)


def evaluate_results(
    results: Sequence[DiagnosisResult], annotations: pd.DataFrame, nodule_threshold: float = 0.5
) -> ConfusionReport:
    """The confusion table per series and in total (every candidate counts, as in the book)."""
    if not results:
        raise BadDataError("no series were diagnosed, so there is nothing to evaluate")
    findings = {r.series_uid: list(r.findings) for r in results}
    return confusion_table(findings, annotations, ConfusionConfig(nodule_threshold=nodule_threshold))
