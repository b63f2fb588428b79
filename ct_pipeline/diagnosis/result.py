"""What ``diagnose`` returns: findings and per-stage timings, as frozen dataclasses and plain dicts.

No torch here, so reports and ``ct merge`` can read results without loading the models.
The dict form is the ``--json`` record and the per-series result file of a batch::

    {"series_uid": str, "source": str,
     "candidates": [{"center_xyz": [x, y, z], "center_irc": [i, r, c], "diameter_mm": float,
                     "nodule_prob": float, "malignancy_prob": float | null, "n_merged": int,
                     "detection_score": float (when it differs from nodule_prob),
                     "measurement": {"volume_mm3", "long_axis_mm", ...} (nodules only)}, ...],
     "timings_s": {"stage": seconds, ...}, "n_candidates_before_merge": int, "n_not_classified": int,
     "shape_irc": [i, r, c], "spacing_xyz": [x, y, z],
     "classified": {column: [value per classified candidate]} (see ``features``; absent before it)}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ct_pipeline.diagnosis.features import CandidateFeatures
from ct_pipeline.diagnosis.volumetry import MaskMeasurement
from ct_pipeline.errors import BadDataError

RESULT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """One candidate after classification (and merging of its duplicates).

    Attributes:
        center_xyz: centre of mass in patient coordinates, mm.
        center_irc: the voxel (index, row, col) the classifier's crop is centred on (the
            rounded centre of mass, as in the book).
        diameter_mm: diameter of the sphere with the segmented component's volume.
        nodule_prob: classifier probability of "nodule", in [0, 1].
        malignancy_prob: probability of "malignant", or None (no malignancy model, or
            ``nodule_prob`` below the nodule threshold).
        n_merged: how many segmentation candidates this finding stands for (1: no duplicates).
        detection_score: what ranks the findings (the LUNA16 CSV's probability): the nodule
            probability weighed by the U-Net's confidence over the candidate's component (see
            ``DiagnosisConfig.confidence_weight``); None: ``nodule_prob`` itself.
        measurement: volume, axes and HU of the outline of a finding at or above
            the nodule threshold (:mod:`~ct_pipeline.diagnosis.volumetry`); None for the others.
    """

    center_xyz: tuple[float, float, float]
    center_irc: tuple[int, int, int]
    diameter_mm: float
    nodule_prob: float
    malignancy_prob: float | None = None
    n_merged: int = 1
    detection_score: float | None = None
    measurement: MaskMeasurement | None = None

    @property
    def score(self) -> float:
        """The ranking score: ``detection_score``, or ``nodule_prob`` where there is none."""
        return self.nodule_prob if self.detection_score is None else self.detection_score

    def to_dict(self) -> dict[str, Any]:
        return {
            "center_xyz": [round(float(v), 3) for v in self.center_xyz],
            "center_irc": [int(v) for v in self.center_irc],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "nodule_prob": float(self.nodule_prob),
            "malignancy_prob": None if self.malignancy_prob is None else float(self.malignancy_prob),
            "n_merged": int(self.n_merged),
            **({} if self.detection_score is None else {"detection_score": float(self.detection_score)}),
            **({} if self.measurement is None else {"measurement": self.measurement.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "result") -> Finding:
        try:
            center_xyz = tuple(float(v) for v in data["center_xyz"])
            center_irc = tuple(int(v) for v in data["center_irc"])
            malignancy = data.get("malignancy_prob")
            finding = cls(
                center_xyz=center_xyz,  # type: ignore[arg-type]
                center_irc=center_irc,  # type: ignore[arg-type]
                diameter_mm=float(data["diameter_mm"]),
                nodule_prob=float(data["nodule_prob"]),
                malignancy_prob=None if malignancy is None else float(malignancy),
                n_merged=int(data.get("n_merged", 1)),
                detection_score=None if data.get("detection_score") is None else float(data["detection_score"]),
                measurement=None if data.get("measurement") is None else MaskMeasurement.from_dict(data["measurement"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadDataError(f"{where}: a candidate lacks or garbles {err}; re-run ct diagnose for it") from err
        if len(finding.center_xyz) != 3 or len(finding.center_irc) != 3 or not all(map(math.isfinite, center_xyz)):
            raise BadDataError(f"{where}: a candidate centre is not 3 finite numbers; re-run ct diagnose for it")
        return finding


@dataclass(frozen=True, eq=False)
class NoduleMask:
    """The outline of one finding (its U-Net mask component cut at its HU edge, see
    :mod:`~ct_pipeline.diagnosis.volumetry`), in the volume's grid.

    Attributes:
        finding: index into ``DiagnosisResult.findings``.
        start_irc: the first voxel (index, row, col) of ``mask`` in the volume.
        mask: bool (index, row, col), the outline's voxels in their bounding box.
        component_start_irc / component: the U-Net component it was cut from, likewise (for
            measuring it again at another HU level: ``ct compare``); None when not kept.
    """

    finding: int
    start_irc: tuple[int, int, int]
    mask: np.ndarray
    component_start_irc: tuple[int, int, int] | None = None
    component: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class DiagnosisResult:
    """Everything ``diagnose`` found in one series.

    Attributes:
        series_uid: the series diagnosed.
        findings: sorted by ``score``, highest first; every candidate, not only nodules.
        timings_s: seconds per stage, in pipeline order.
        n_candidates_before_merge: candidates classified, before duplicates were merged.
        n_not_classified: candidates beyond the budget (``DiagnosisConfig.max_candidates``):
            never classified, so not findings (a probability of 0 would read as the
            classifier's verdict, and a scan's evaluation would count them as found).
        shape_irc: the volume's shape (index, row, col).
        spacing_xyz: voxel size, mm (x, y, z).
        source: where the series was read from.
        region_fraction: fraction of the volume's pixels the U-Net was run on (1.0: all).
        provenance: what made it: ct version, models, settings, source fingerprint
            (:mod:`ct_pipeline.diagnosis.provenance`); empty when not recorded.
        nodule_masks: the outline of each finding at or above the nodule threshold,
            for the DICOM Segmentation; not part of the JSON record (empty when read back).
        classified: every classified candidate before merging, with what the U-Net and the
            classifier said about it (:mod:`~ct_pipeline.diagnosis.features`), for offline
            score experiments; None in results written before it.
    """

    series_uid: str
    findings: tuple[Finding, ...]
    timings_s: Mapping[str, float] = field(default_factory=dict)
    n_candidates_before_merge: int = 0
    shape_irc: tuple[int, int, int] = (0, 0, 0)
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str = ""
    region_fraction: float = 1.0
    provenance: Mapping[str, Any] = field(default_factory=dict)
    nodule_masks: tuple[NoduleMask, ...] = field(default=(), compare=False)
    # Last, so that results built by position (older callers) keep their meaning.
    n_not_classified: int = 0
    classified: CandidateFeatures | None = field(default=None, compare=False)

    def nodules(self, threshold: float) -> list[Finding]:
        """Findings with ``nodule_prob >= threshold``, highest first."""
        return [f for f in self.findings if f.nodule_prob >= threshold]

    def with_timings(self, extra: Mapping[str, float], first: bool = False) -> DiagnosisResult:
        """A copy with more stage timings (``first``: put them before the existing ones)."""
        merged = {**extra, **self.timings_s} if first else {**self.timings_s, **extra}
        return replace(self, timings_s=merged)

    def with_provenance(self, provenance: Mapping[str, Any]) -> DiagnosisResult:
        return replace(self, provenance=dict(provenance))

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "source": self.source,
            "candidates": [f.to_dict() for f in self.findings],
            "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
            "n_candidates_before_merge": int(self.n_candidates_before_merge),
            "n_not_classified": int(self.n_not_classified),
            "shape_irc": [int(v) for v in self.shape_irc],
            "spacing_xyz": [float(v) for v in self.spacing_xyz],
            "region_fraction": round(float(self.region_fraction), 4),
            "provenance": dict(self.provenance),
            "format_version": RESULT_FORMAT_VERSION,
            **({} if self.classified is None else {"classified": self.classified.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "result") -> DiagnosisResult:
        """Read a record written by :meth:`to_dict`.

        Raises:
            BadDataError: not a diagnosis record.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("series_uid"), str):
            raise BadDataError(f"{where}: not a ct diagnose result (no series_uid); delete it or re-run ct diagnose")
        candidates = data.get("candidates")
        if not isinstance(candidates, list):
            raise BadDataError(f"{where}: 'candidates' is missing or not a list; re-run ct diagnose for it")
        findings = tuple(Finding.from_dict(c, where) for c in candidates)
        timings = data.get("timings_s") or {}
        classified = None if data.get("classified") is None else CandidateFeatures.from_dict(data["classified"], where)
        if classified is not None and len(classified) and classified.finding.max() >= len(findings):
            raise BadDataError(f"{where}: a classified candidate names a finding it does not hold; re-run ct diagnose")
        try:
            return cls(
                series_uid=data["series_uid"],
                findings=findings,
                timings_s={str(k): float(v) for k, v in timings.items()},
                n_candidates_before_merge=int(data.get("n_candidates_before_merge", len(findings))),
                n_not_classified=int(data.get("n_not_classified", 0)),
                shape_irc=tuple(int(v) for v in data.get("shape_irc", (0, 0, 0))),  # type: ignore[arg-type]
                spacing_xyz=tuple(float(v) for v in data.get("spacing_xyz", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
                source=str(data.get("source", "")),
                region_fraction=float(data.get("region_fraction", 1.0)),
                provenance=dict(data.get("provenance") or {}),
                classified=classified,
            )
        except (AttributeError, TypeError, ValueError) as err:
            raise BadDataError(f"{where}: a field has the wrong type ({err}); re-run ct diagnose for it") from err
