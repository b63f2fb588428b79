"""The book's end-to-end confusion table (chapter 14): what the pipeline decided about each nodule.

Rows are the truth (non-nodule, benign, malignant); columns the pipeline's decision:

* complete miss -- no finding near the nodule (always 0 for non-nodules: nothing to count);
* filtered out -- found by segmentation, but its nodule probability is below the threshold;
* predicted benign -- a nodule whose malignancy probability is below its threshold (or unknown,
  when no malignancy model ran);
* predicted malignant -- the rest.

A finding matches a nodule when its distance to the centre is less than ``match_fraction``
(the book: 0.7) times the nodule's diameter. As in the book, a nodule hit by several findings
takes the most advanced decision among them, a finding on several nodules counts for each, and
findings on no nodule fill the non-nodule row. Nodules whose malignancy is unknown are left out,
and so are the findings on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from ct_pipeline.errors import BadDataError, BadInputError

if TYPE_CHECKING:
    from rich.table import Table

TRUTH_LABELS = ("non-nodule", "benign", "malignant")
DECISION_LABELS = ("complete miss", "filtered out", "predicted benign", "predicted malignant")
_CENTER_COLUMNS = ["center_x_mm", "center_y_mm", "center_z_mm"]
_MISS, _FILTERED, _BENIGN, _MALIGNANT = range(4)


class ScoredFinding(Protocol):
    """What the table needs of a diagnosis finding."""

    center_xyz: Sequence[float]  # patient mm
    nodule_prob: float
    malignancy_prob: float | None  # None when no malignancy model ran


@dataclass(frozen=True)
class ConfusionConfig:
    """Decision thresholds and the matching distance.

    Attributes:
        nodule_threshold: a finding with nodule_prob below it is filtered out.
        malignancy_threshold: a nodule with malignancy_prob at or above it is predicted malignant.
        match_fraction: a finding matches a nodule within this fraction of its diameter.
    """

    nodule_threshold: float = 0.5
    malignancy_threshold: float = 0.5
    match_fraction: float = 0.7

    def __post_init__(self) -> None:
        for name in ("nodule_threshold", "malignancy_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BadInputError(f"{name} = {value} is not a probability; give a value in [0, 1], e.g. 0.5")
        if not self.match_fraction > 0:
            raise BadInputError(f"match_fraction = {self.match_fraction} must be positive (the book uses 0.7)")


@dataclass(frozen=True)
class ConfusionTable:
    """Counts, rows ``TRUTH_LABELS`` x columns ``DECISION_LABELS``."""

    counts: tuple[tuple[int, ...], ...] = ((0,) * 4,) * 3

    @classmethod
    def from_array(cls, counts: np.ndarray) -> ConfusionTable:
        return cls(tuple(tuple(int(v) for v in row) for row in np.asarray(counts).reshape(3, 4)))

    def as_array(self) -> np.ndarray:
        """(3, 4) int64."""
        return np.array(self.counts, dtype=np.int64)

    def __add__(self, other: ConfusionTable) -> ConfusionTable:
        return ConfusionTable.from_array(self.as_array() + other.as_array())

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {truth: dict(zip(DECISION_LABELS, row)) for truth, row in zip(TRUTH_LABELS, self.counts)}


@dataclass(frozen=True)
class ConfusionReport:
    """Tables per series (in the order given) and their sum."""

    per_series: Mapping[str, ConfusionTable] = field(default_factory=dict)
    total: ConfusionTable = ConfusionTable()
    n_unknown_malignancy: int = 0

    def to_dict(self) -> dict:
        return {
            "total": self.total.to_dict(),
            "per_series": {uid: table.to_dict() for uid, table in self.per_series.items()},
            "n_nodules_unknown_malignancy": self.n_unknown_malignancy,
        }


def _decisions(findings: Sequence[ScoredFinding], config: ConfusionConfig) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3) centres in mm and (F,) decision column of each finding."""
    centers = np.array([tuple(f.center_xyz) for f in findings], dtype=np.float64).reshape(-1, 3)
    decision = np.empty(len(findings), dtype=np.int64)
    for i, finding in enumerate(findings):
        if finding.nodule_prob < config.nodule_threshold:
            decision[i] = _FILTERED
        elif finding.malignancy_prob is None or finding.malignancy_prob < config.malignancy_threshold:
            decision[i] = _BENIGN
        else:
            decision[i] = _MALIGNANT
    return centers, decision


def series_confusion(
    findings: Sequence[ScoredFinding], nodules: pd.DataFrame, config: ConfusionConfig = ConfusionConfig()
) -> tuple[ConfusionTable, int]:
    """The table of one series: ``nodules`` are its annotations (see :func:`confusion_table`).

    Returns:
        The table and the number of nodules left out for unknown malignancy.
    """
    centers, decision = _decisions(findings, config)
    truth_xyz = nodules[_CENTER_COLUMNS].to_numpy(dtype=np.float64).reshape(-1, 3)
    diameter_mm = nodules["diameter_mm"].to_numpy(dtype=np.float64)
    malignant = nodules["is_malignant"].astype("boolean")
    known = ~malignant.isna().to_numpy()
    truth_row = np.where(malignant.fillna(False).to_numpy(dtype=bool), 2, 1)

    # (nodules, findings): distance in units of the nodule's diameter
    distance = np.linalg.norm(truth_xyz[:, None, :] - centers[None, :, :], axis=-1) / diameter_mm[:, None]
    matches = distance < config.match_fraction
    best = np.where(matches, decision[None, :], _MISS).max(axis=1, initial=_MISS)
    on_nodule = matches.any(axis=0)

    counts = np.zeros((3, 4), dtype=np.int64)
    np.add.at(counts, (0, decision[~on_nodule]), 1)
    np.add.at(counts, (truth_row[known], best[known]), 1)
    return ConfusionTable.from_array(counts), int((~known).sum())


def confusion_table(
    findings_by_series: Mapping[str, Sequence[ScoredFinding]],
    annotations: pd.DataFrame,
    config: ConfusionConfig = ConfusionConfig(),
) -> ConfusionReport:
    """The book's confusion table for each diagnosed series, and in total.

    Args:
        findings_by_series: series UID -> its findings (``center_xyz`` mm, ``nodule_prob``,
            ``malignancy_prob``); a series with no findings maps to an empty list.
        annotations: nodules with columns series_uid, center_x_mm, center_y_mm, center_z_mm,
            diameter_mm, is_malignant (True/False/<NA>), as :func:`ct_pipeline.luna16.read_malignancy`
            gives; with an ``is_nodule`` column (the candidate table) only its nodules are used.
            Annotations of series not in ``findings_by_series`` are ignored.
        config: thresholds and matching distance.
    """
    required = ["series_uid", *_CENTER_COLUMNS, "diameter_mm", "is_malignant"]
    missing = [c for c in required if c not in annotations.columns]
    if missing:
        raise BadDataError(
            f"the annotations lack column(s) {missing}; the confusion table needs nodules with a malignancy "
            "flag (annotations_with_malignancy.csv)"
        )
    if "is_nodule" in annotations.columns:
        annotations = annotations.loc[annotations["is_nodule"].astype(bool)]
    bad = np.flatnonzero(~(annotations["diameter_mm"].to_numpy(dtype=np.float64) > 0))
    if len(bad):
        row = annotations.iloc[int(bad[0])]
        raise BadDataError(
            f"nodule of series {row['series_uid']} at ({row['center_x_mm']:g}, {row['center_y_mm']:g}, "
            f"{row['center_z_mm']:g}) has diameter {row['diameter_mm']} mm; matching needs a positive diameter"
        )
    by_series = {uid: group for uid, group in annotations.groupby("series_uid", sort=False)}
    empty = annotations.iloc[:0]
    per_series: dict[str, ConfusionTable] = {}
    total = ConfusionTable()
    n_unknown = 0
    for uid, findings in findings_by_series.items():
        table, unknown = series_confusion(findings, by_series.get(uid, empty), config)
        per_series[uid] = table
        total = total + table
        n_unknown += unknown
    return ConfusionReport(per_series=per_series, total=total, n_unknown_malignancy=n_unknown)


def render_confusion_table(table: ConfusionTable, title: str = "total") -> Table:
    """A rich table of ``table``: truth rows, decision columns (the non-nodule miss cell shows '-')."""
    from rich.table import Table

    rendered = Table(title=title, title_justify="left")
    rendered.add_column("truth \\ decision", style="bold")
    for label in DECISION_LABELS:
        rendered.add_column(label, justify="right")
    for row_index, (label, row) in enumerate(zip(TRUTH_LABELS, table.counts)):
        cells = ["-" if (row_index == 0 and col == _MISS) else str(value) for col, value in enumerate(row)]
        rendered.add_row(label, *cells)
    return rendered
