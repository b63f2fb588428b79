"""Hard negatives: the segmentation model's own false positives, as extra negatives for the classifier.

The classifier learns from ``candidates.csv``, but at diagnosis it judges what the U-Net proposes,
and the two differ: LUNA16's candidates come from other detectors, a synthetic table from random
points near vessels and the pleura. The mask components that are not nodules (vessel junctions,
pleural bumps, noise) are exactly the confident false positives that decide the FROC at 1/8 to 1
false positive per scan. This runs stages 1-3 of diagnosis on the training series and writes
every candidate that is far from every annotated nodule as a ``class 0`` row of a
``candidates.csv``-format file, for ``ct train-cls --extra-candidates``.

With ``with_positives`` it also writes the candidates that hit an annotated nodule (centre within
its radius, LUNA16's hit rule) as ``class 1`` rows: the pipeline's own candidates with labels, for
``ct train-cls --own-candidates --own-share``. Candidates in between (pieces of a nodule's mask,
off its centre) are neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.catalog import Catalog
from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.diagnosis.networks import DiagnosisModels
from ct_pipeline.diagnosis.pipeline import check_diagnosable, propose_candidates
from ct_pipeline.errors import BadInputError
from ct_pipeline.loading import load_entry
from ct_pipeline.luna16 import CENTER_COLUMNS


@dataclass(frozen=True)
class HardNegativeConfig:
    """What counts as a hard negative.

    Attributes:
        clearance_diameters: a candidate closer to an annotated nodule's centre than this many of
            its diameters is left out (LUNA16 counts a hit within one radius; twice that keeps
            pieces of a nodule's mask, which are not "non-nodules", out of the negatives).
        min_clearance_mm: and never closer than this (small nodules, imprecise centres).
        max_per_series: at most this many negatives per series, the largest components first (a
            loose mask can propose thousands; the cache stores a region around every one).
            Positives are never capped: there are a few per series, and they are what is scarce.
        with_positives: also keep the candidates that hit a nodule, as class 1.
    """

    clearance_diameters: float = 1.0
    min_clearance_mm: float = 5.0
    max_per_series: int = 400
    with_positives: bool = False

    def __post_init__(self) -> None:
        if self.clearance_diameters < 0 or self.min_clearance_mm < 0:
            raise BadInputError("the clearance around nodules must be >= 0")
        if self.max_per_series < 1:
            raise BadInputError(f"--max-per-series {self.max_per_series}: expected a whole number >= 1")


def far_from_nodules(
    centers_xyz: np.ndarray, nodule_centers_xyz: np.ndarray, nodule_diameters_mm: np.ndarray, config: HardNegativeConfig
) -> np.ndarray:
    """(N,) bool: candidate centres (N, 3) mm outside every nodule's clearance."""
    if len(nodule_centers_xyz) == 0 or len(centers_xyz) == 0:
        return np.ones(len(centers_xyz), dtype=bool)
    distance = np.linalg.norm(centers_xyz[:, None, :] - nodule_centers_xyz[None, :, :], axis=2)
    clearance = np.maximum(config.clearance_diameters * nodule_diameters_mm, config.min_clearance_mm)
    return (distance >= clearance[None, :]).all(axis=1)


def hits_nodule(centers_xyz: np.ndarray, nodule_centers_xyz: np.ndarray, nodule_diameters_mm: np.ndarray) -> np.ndarray:
    """(N,) bool: candidate centres (N, 3) mm within some nodule's radius (LUNA16's hit rule)."""
    if len(nodule_centers_xyz) == 0 or len(centers_xyz) == 0:
        return np.zeros(len(centers_xyz), dtype=bool)
    distance = np.linalg.norm(centers_xyz[:, None, :] - nodule_centers_xyz[None, :, :], axis=2)
    return (distance <= nodule_diameters_mm[None, :] / 2).any(axis=1)


def series_hard_negatives(
    catalog: Catalog, series_uid: str, models: DiagnosisModels, diagnosis: DiagnosisConfig, config: HardNegativeConfig
) -> pd.DataFrame:
    """One series' hard negatives: rows of seriesuid, coordX, coordY, coordZ, class (0); with
    ``config.with_positives`` its hits too (class 1), in the candidates' order."""
    volume = load_entry(catalog.entries[series_uid])
    check_diagnosable(volume, models.context_slices)
    candidates, _ = propose_candidates(volume, models, diagnosis)
    nodules = catalog.candidates_of(series_uid)
    nodules = nodules[nodules["is_nodule"]]
    return labelled_candidates(
        series_uid,
        candidates.center_xyz,
        candidates.n_voxels,
        nodules[CENTER_COLUMNS].to_numpy(np.float64),
        nodules["diameter_mm"].to_numpy(np.float64),
        config,
    )


def labelled_candidates(
    series_uid: str,
    centers_xyz: np.ndarray,
    n_voxels: np.ndarray,
    nodule_centers_xyz: np.ndarray,
    nodule_diameters_mm: np.ndarray,
    config: HardNegativeConfig,
) -> pd.DataFrame:
    """Candidates (centres (N, 3) mm, sizes (N,) voxels) of one series as ``candidates.csv`` rows:
    the far ones class 0 (the largest ``max_per_series``), with ``with_positives`` the hits class 1."""
    keep = far_from_nodules(centers_xyz, nodule_centers_xyz, nodule_diameters_mm, config)
    negatives = np.flatnonzero(keep)[np.argsort(-n_voxels[keep], kind="stable")][: config.max_per_series]
    positives = (
        np.flatnonzero(hits_nodule(centers_xyz, nodule_centers_xyz, nodule_diameters_mm))
        if config.with_positives
        else np.zeros(0, dtype=np.int64)
    )
    chosen = np.concatenate([negatives, positives])
    order = np.argsort(chosen, kind="stable")
    centers = centers_xyz[chosen[order]].reshape(-1, 3)
    return pd.DataFrame(
        {
            "seriesuid": series_uid,
            "coordX": centers[:, 0],
            "coordY": centers[:, 1],
            "coordZ": centers[:, 2],
            "class": np.concatenate([np.zeros(len(negatives), np.int64), np.ones(len(positives), np.int64)])[order],
        }
    )


def mine_hard_negatives(
    catalog: Catalog,
    series_uids: Sequence[str],
    models: DiagnosisModels,
    out_csv: Path,
    diagnosis: DiagnosisConfig = DiagnosisConfig(),
    config: HardNegativeConfig = HardNegativeConfig(),
    announce: Callable[[str, int], None] = lambda uid, n: None,
) -> tuple[int, int]:
    """Write the mined candidates of ``series_uids`` to ``out_csv`` (atomically).

    ``announce(series_uid, n)`` is called after each series.

    Returns:
        (rows written, of which positives).
    """
    frames = []
    for uid in series_uids:
        frame = series_hard_negatives(catalog, uid, models, diagnosis, config)
        announce(uid, len(frame))
        frames.append(frame)
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["seriesuid", "coordX", "coordY", "coordZ", "class"])
    )
    atomic_write_text(out_csv, table.to_csv(index=False, float_format="%.3f"))
    return len(table), int((table["class"] == 1).sum())
