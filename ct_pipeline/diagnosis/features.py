"""What the U-Net and the classifier said about every classified candidate, before merging.

A per-series result's findings are what is left after merging, ranked by one score. To try another
score offline (e.g. the classifier's probability times the U-Net's confidence, or a size-aware one)
without running anything again, the result also carries, for each candidate the classifier saw, the
features that score could use and which finding it was merged into: a re-scored scan merges again
(:func:`~ct_pipeline.diagnosis.candidates.merge_groups`) from these rows alone
(:mod:`ct_pipeline.evaluation.rescore` does it for a folder and returns the CPM).

In the JSON record it is the ``classified`` object, one list per column (``pandas.DataFrame`` reads
it as it is), rows in the order the classifier saw them::

    {"center_xyz": [[x, y, z], ...], "crop_center_irc": [[i, r, c], ...], "diameter_mm": [...],
     "n_voxels": [...], "confident_fraction": [...] | null, "budget_rank": [...],
     "nodule_prob": [...], "detection_score": [...], "finding": [...]}

The U-Net's peak and mean probability over a component are not among them: the segmentation keeps
only its thresholded three-level map (see :func:`~ct_pipeline.diagnosis.segment.segment_volume`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ct_pipeline.errors import BadDataError


@dataclass(frozen=True, eq=False)
class CandidateFeatures:
    """The classified candidates of one series (N rows), as arrays.

    Attributes:
        center_xyz: (N, 3) centre of mass, patient mm.
        crop_center_irc: (N, 3) int, the voxel the classifier's crop was centred on.
        diameter_mm: (N,) diameter of the sphere with the segmented component's volume.
        n_voxels: (N,) voxels of the eroded component (before erosion: ``diameter_mm``).
        confident_fraction: (N,) share of the component above the U-Net's confident threshold
            (``DiagnosisConfig.confident_threshold``), or None where it was not computed (no
            confidence weight and no budget, as ``--book-style``).
        budget_rank: (N,) 0-based rank among all of the scan's candidates by the U-Net's output
            alone (:func:`~ct_pipeline.diagnosis.candidates.budget_order`); ranks at or beyond
            the budget were not classified, so they are absent.
        nodule_prob: (N,) the classifier's probability (with test-time flips where they were on).
        detection_score: (N,) the score that ranked and merged them (the finding's score).
        finding: (N,) index into ``DiagnosisResult.findings`` of the finding that stands for the
            candidate (its own where it was kept).
    """

    center_xyz: np.ndarray
    crop_center_irc: np.ndarray
    diameter_mm: np.ndarray
    n_voxels: np.ndarray
    confident_fraction: np.ndarray | None
    budget_rank: np.ndarray
    nodule_prob: np.ndarray
    detection_score: np.ndarray
    finding: np.ndarray

    def __len__(self) -> int:
        return int(len(self.nodule_prob))

    def to_dict(self) -> dict[str, Any]:
        return {
            "center_xyz": [[round(float(v), 3) for v in row] for row in self.center_xyz],
            "crop_center_irc": [[int(v) for v in row] for row in self.crop_center_irc],
            "diameter_mm": [round(float(v), 3) for v in self.diameter_mm],
            "n_voxels": [int(v) for v in self.n_voxels],
            "confident_fraction": None
            if self.confident_fraction is None
            else [float(v) for v in self.confident_fraction],
            "budget_rank": [int(v) for v in self.budget_rank],
            "nodule_prob": [float(v) for v in self.nodule_prob],
            "detection_score": [float(v) for v in self.detection_score],
            "finding": [int(v) for v in self.finding],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "result") -> CandidateFeatures:
        """Read :meth:`to_dict`'s columns.

        Raises:
            BadDataError: a column is missing, of another length, or not numbers.
        """
        if not isinstance(data, Mapping):
            raise BadDataError(f"{where}: 'classified' is not an object of columns; re-run ct diagnose for it")
        try:
            confident = data.get("confident_fraction")
            features = cls(
                center_xyz=np.asarray(data["center_xyz"], dtype=np.float64).reshape(-1, 3),
                crop_center_irc=np.asarray(data["crop_center_irc"], dtype=np.int64).reshape(-1, 3),
                diameter_mm=np.asarray(data["diameter_mm"], dtype=np.float64),
                n_voxels=np.asarray(data["n_voxels"], dtype=np.int64),
                confident_fraction=None if confident is None else np.asarray(confident, dtype=np.float64),
                budget_rank=np.asarray(data["budget_rank"], dtype=np.int64),
                nodule_prob=np.asarray(data["nodule_prob"], dtype=np.float64),
                detection_score=np.asarray(data["detection_score"], dtype=np.float64),
                finding=np.asarray(data["finding"], dtype=np.int64),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadDataError(f"{where}: the classified candidates lack or garble {err}; re-run ct diagnose") from err
        columns = [features.center_xyz, features.crop_center_irc, features.diameter_mm, features.n_voxels]
        columns += [features.budget_rank, features.detection_score, features.finding]
        columns += [] if features.confident_fraction is None else [features.confident_fraction]
        if any(len(column) != len(features) for column in columns):
            raise BadDataError(f"{where}: the classified candidates' columns differ in length; re-run ct diagnose")
        return features


def budget_ranks(order: np.ndarray) -> np.ndarray:
    """(N,) the 0-based rank of each candidate in ``order`` (candidate indices, best first)."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank
