"""The inputs of an evaluation as numpy arrays: findings, annotated nodules, the evaluated scans.

Findings use the LUNA16 submission format ``seriesuid,coordX,coordY,coordZ,probability``
(patient mm); annotations use ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (``annotations.csv``
and the challenge's ``annotations_excluded.csv``); the list of evaluated scans is the challenge's
``seriesuids.csv``: one series UID per line, no header. Every reader names the file and the line
of the first bad row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ct_pipeline.errors import BadDataError, NotFoundError
from ct_pipeline.luna16 import read_annotations, read_findings_frame

PREDICTION_HEADER = "seriesuid,coordX,coordY,coordZ,probability"
ANNOTATION_HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm"
# The challenge's convention for annotations_excluded.csv: a negative diameter (written -1) means
# the irrelevant finding has no measured size, and a 10 mm sphere is used around it.
EXCLUDED_DEFAULT_DIAMETER_MM = 10.0


@dataclass(frozen=True, eq=False)
class FindingTable:
    """Findings (CAD marks) of a detection system.

    Attributes:
        series_uid: (N,) str.
        center_xyz: (N, 3) float64, patient mm.
        probability: (N,) float64, any finite score; higher means more likely a nodule.
    """

    series_uid: np.ndarray
    center_xyz: np.ndarray
    probability: np.ndarray

    def __len__(self) -> int:
        return len(self.probability)

    @classmethod
    def from_arrays(cls, series_uid, center_xyz, probability) -> FindingTable:
        """Build from array-likes (for tests and callers that hold findings in memory)."""
        return cls(
            np.asarray(series_uid, dtype=object).reshape(-1),
            np.asarray(center_xyz, dtype=np.float64).reshape(-1, 3),
            np.asarray(probability, dtype=np.float64).reshape(-1),
        )


@dataclass(frozen=True, eq=False)
class NoduleTable:
    """Annotated nodules (or the challenge's excluded, irrelevant findings).

    Attributes:
        series_uid: (M,) str.
        center_xyz: (M, 3) float64, patient mm.
        diameter_mm: (M,) float64, > 0.
    """

    series_uid: np.ndarray
    center_xyz: np.ndarray
    diameter_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.diameter_mm)

    @classmethod
    def from_arrays(cls, series_uid, center_xyz, diameter_mm) -> NoduleTable:
        return cls(
            np.asarray(series_uid, dtype=object).reshape(-1),
            np.asarray(center_xyz, dtype=np.float64).reshape(-1, 3),
            np.asarray(diameter_mm, dtype=np.float64).reshape(-1),
        )

    @classmethod
    def empty(cls) -> NoduleTable:
        return cls.from_arrays([], np.zeros((0, 3)), [])


def _check_file(path: Path, header: str) -> None:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file; expected a CSV with header {header}")
    if path.stat().st_size == 0:
        raise BadDataError(f"{path}: the file is empty; expected at least the header line {header}")


def read_findings(path: Path) -> FindingTable:
    """A LUNA16 submission CSV -> :class:`FindingTable` (a header-only file gives no findings);
    checked by :func:`ct_pipeline.luna16.read_findings_frame`."""
    path = Path(path)
    _check_file(path, PREDICTION_HEADER)
    frame = read_findings_frame(path)
    return FindingTable.from_arrays(
        frame["seriesuid"].to_numpy(dtype=object),
        frame[["coordX", "coordY", "coordZ"]].to_numpy(dtype=np.float64),
        frame["probability"].to_numpy(dtype=np.float64),
    )


def read_nodules(path: Path, *, excluded: bool = False) -> NoduleTable:
    """``annotations.csv`` (or with ``excluded=True`` ``annotations_excluded.csv``) -> :class:`NoduleTable`,
    checked by :func:`ct_pipeline.luna16.read_annotations` (a positive diameter, each nodule once);
    in the excluded table a negative diameter means 10 mm.
    """
    path = Path(path)
    _check_file(path, ANNOTATION_HEADER)
    frame = read_annotations(path, any_id=True, excluded=excluded)
    diameter_mm = frame["diameter_mm"].to_numpy(dtype=np.float64).copy()
    diameter_mm[diameter_mm < 0] = EXCLUDED_DEFAULT_DIAMETER_MM
    return NoduleTable.from_arrays(
        frame["series_uid"].to_numpy(dtype=object),
        frame[["center_x_mm", "center_y_mm", "center_z_mm"]].to_numpy(dtype=np.float64),
        diameter_mm,
    )


def read_series_list(path: Path) -> tuple[str, ...]:
    """The challenge's ``seriesuids.csv`` (one UID per line, first column) -> unique UIDs in file order.

    Blank lines are skipped, and so is a first line reading ``seriesuid`` (a header the file
    should not have, but one that must not count as a scan).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file; expected one series UID per line")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise BadDataError(f"{path}: not a UTF-8 text file; expected one series UID per line") from err
    uids: dict[str, None] = {}
    for line_number, line in enumerate(lines, start=1):
        uid = line.split(",")[0].strip().strip('"')
        if not uid or (line_number == 1 and uid.lower() == "seriesuid"):
            continue
        uids[uid] = None  # any non-empty ID: the evaluator compares IDs, it builds no path from them
    if not uids:
        raise BadDataError(f"{path}: no series UIDs found; expected one series UID per line")
    return tuple(uids)


def annotated_series(nodules: NoduleTable) -> tuple[str, ...]:
    """The series of ``nodules`` in first-seen order (the default set of evaluated scans)."""
    return tuple(pd.unique(nodules.series_uid))
