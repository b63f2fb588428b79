"""Two diagnosed scans of one patient compared: :func:`compare_scans` and its JSON.

The JSON (``ct compare --json``)::

    {"prior": {"series_uid", "source", "study_date", "n_nodules"}, "current": {...},
     "interval_days": float | null, "interval_from": "StudyDate" | "--interval-days" | "",
     "threshold": float, "registration": {...},
     "pairs": [{"prior": {nodule}, "current": {nodule}, "current_in_prior_xyz": [x, y, z],
                "distance_mm", "volume_change_pct", "doubling_time_days", "level_hu"}, ...],
     "vanished": [{nodule}, ...], "new": [{nodule}, ...], "warnings": [str, ...]}

where a nodule is ``{"rank", "center_xyz", "slice", "volume_mm3", "mean_diameter_mm",
"nodule_prob", "malignancy_prob"}`` (rank: its place among the scan's findings at the threshold);
vanished and new ones add ``"near_pair"``: the pair whose nodule's edge lies within 10 mm in the
same scan (likely a fragment of that lesion), or null. ``warnings``: signs that the two scans are
not of one patient (:func:`same_patient_warnings`), each one line; empty when there are none.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.errors import BadInputError
from ct_pipeline.followup.matching import MatchConfig, NodulePair, finding_volume_mm3, match_nodules
from ct_pipeline.followup.registration import Registration

# Registered lung overlap (Dice of the lungs' air) below which two scans are unlikely to be of one
# patient. Measured (README, "ct compare"): 12 synthetic follow-ups (small and medium, both styles)
# 0.980-0.990 and the real CT against its re-posed copy 0.991; different synthetic phantoms --
# more alike than two people, one generator drew them -- 0.21-0.91, the real CT against a
# synthetic one 0.27-0.69. Midway: 0.03 below the lowest true pair, 0.04 above the highest other.
SAME_PATIENT_OVERLAP = 0.95


@dataclass(frozen=True)
class ScanSummary:
    """One of the two scans: its UID, where it came from, its DICOM StudyDate (YYYYMMDD or "")."""

    series_uid: str
    source: str
    study_date: str
    n_nodules: int

    def to_dict(self) -> dict:
        return {
            "series_uid": self.series_uid,
            "source": self.source,
            "study_date": self.study_date,
            "n_nodules": self.n_nodules,
        }


@dataclass(frozen=True)
class Comparison:
    """PRIOR and CURRENT's nodules paired, with volume change; new and vanished ones apart.

    ``vanished`` and ``new`` hold (rank, finding): rank among the scan's nodules, 1-based.
    """

    prior: ScanSummary
    current: ScanSummary
    interval_days: float | None
    interval_from: str
    threshold: float
    registration: Registration
    pairs: tuple[NodulePair, ...]
    vanished: tuple[tuple[int, Finding], ...]
    new: tuple[tuple[int, Finding], ...]
    warnings: tuple[str, ...] = ()

    def pair_near(self, finding: Finding, scan: str, within_mm: float = 10.0) -> int | None:
        """The pair (1-based) whose nodule in ``scan`` ("prior" or "current") has its edge within
        ``within_mm`` of ``finding``'s centre: a left-over finding there is likely a fragment of
        the same lesion (the detector split it in one scan), not a new or vanished nodule."""
        for k, p in enumerate(self.pairs, start=1):
            other = p.prior if scan == "prior" else p.current
            if math.dist(other.center_xyz, finding.center_xyz) <= other.diameter_mm / 2.0 + within_mm:
                return k
        return None

    def to_dict(self) -> dict:
        def pair(p: NodulePair) -> dict:
            return {
                "prior": nodule_dict(p.prior_rank, p.prior),
                "current": nodule_dict(p.current_rank, p.current),
                "current_in_prior_xyz": [round(v, 3) for v in p.current_in_prior_xyz],
                "distance_mm": round(p.distance_mm, 3),
                "volume_change_pct": None if p.volume_change_pct is None else round(p.volume_change_pct, 2),
                "doubling_time_days": None if p.doubling_time_days is None else round(p.doubling_time_days, 1),
                "level_hu": None if p.level_hu is None else round(p.level_hu, 1),
            }

        return {
            "prior": self.prior.to_dict(),
            "current": self.current.to_dict(),
            "interval_days": self.interval_days,
            "interval_from": self.interval_from,
            "threshold": self.threshold,
            "registration": self.registration.to_dict(),
            "pairs": [pair(p) for p in self.pairs],
            "vanished": [
                {**nodule_dict(rank, f), "near_pair": self.pair_near(f, "prior")} for rank, f in self.vanished
            ],
            "new": [{**nodule_dict(rank, f), "near_pair": self.pair_near(f, "current")} for rank, f in self.new],
            "warnings": list(self.warnings),
        }


def nodule_dict(rank: int, finding: Finding) -> dict:
    measured = finding.measurement
    volume = finding_volume_mm3(finding)
    return {
        "rank": rank,
        "center_xyz": [round(float(v), 3) for v in finding.center_xyz],
        "slice": int(finding.center_irc[0]),
        "volume_mm3": None if volume is None else round(volume, 2),
        "mean_diameter_mm": None if measured is None else round(float(measured.mean_diameter_mm), 2),
        "nodule_prob": round(float(finding.nodule_prob), 4),
        "malignancy_prob": None if finding.malignancy_prob is None else round(float(finding.malignancy_prob), 4),
    }


def _date(text: str) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return None


def scan_interval(prior_date: str, current_date: str, given_days: float | None) -> tuple[float | None, str]:
    """(days from PRIOR to CURRENT, where that came from): ``given_days`` if given, else the
    difference of the DICOM StudyDates when both are valid, else (None, "").

    Raises:
        BadInputError: the StudyDates put CURRENT before PRIOR (the scans were given the wrong way round).
    """
    if given_days is not None:
        if not math.isfinite(given_days) or given_days < 0:
            raise BadInputError(f"--interval-days {given_days!r} must be a finite number of days, 0 or more")
        return float(given_days), "--interval-days"
    first, second = _date(prior_date), _date(current_date)
    if first is None or second is None:
        return None, ""
    days = (second - first).days
    if days < 0:
        raise BadInputError(
            f"PRIOR's StudyDate {prior_date} is after CURRENT's {current_date}: give the earlier scan first"
        )
    return float(days), "StudyDate"


def same_patient_warnings(patient_ids: tuple[str, str], registration: Registration) -> tuple[str, ...]:
    """One line for each sign that the comparison compares nothing: the DICOM PatientIDs differ (both
    known), or the registered lung overlap stays below :data:`SAME_PATIENT_OVERLAP` (different
    patients, or a registration that failed). Pairs, volume changes and doubling times then mean nothing."""
    warnings = []
    prior_id, current_id = (text.strip() for text in patient_ids)
    if prior_id and current_id and prior_id != current_id:
        warnings.append(
            f"PRIOR's PatientID {prior_id!r} differs from CURRENT's {current_id!r}: ct compare follows one "
            "patient's nodules; check that these are the two scans you meant"
        )
    # Judged as printed: 0.8996 must not read "0.900, below the 0.9".
    if round(registration.lung_overlap_after, 3) < SAME_PATIENT_OVERLAP:
        warnings.append(
            f"the lungs overlap only {registration.lung_overlap_after:.3f} after registration, below the "
            f"{SAME_PATIENT_OVERLAP:g} two scans of one patient reach: they may be of different patients (or not "
            "both of the whole chest), or the registration failed, and the pairs and volume changes may be wrong; "
            "check the scans and the --report pictures"
        )
    return tuple(warnings)


def compare_scans(
    prior: DiagnosisResult,
    current: DiagnosisResult,
    registration: Registration,
    *,
    study_dates: tuple[str, str] = ("", ""),
    patient_ids: tuple[str, str] = ("", ""),
    interval_days: float | None = None,
    threshold: float = 0.5,
    matching: MatchConfig = MatchConfig(),
) -> Comparison:
    """Pair the nodules (findings at or above ``threshold``) of two diagnosed scans.

    Args:
        prior / current: the two scans' results.
        registration: CURRENT registered to PRIOR (:func:`~ct_pipeline.followup.registration.register_scans`).
        study_dates: the scans' DICOM StudyDates (YYYYMMDD; "" when unknown).
        patient_ids: the scans' DICOM PatientIDs ("" when unknown), for :func:`same_patient_warnings`.
        interval_days: overrides the StudyDates' interval.
    """
    days, source = scan_interval(*study_dates, interval_days)
    prior_nodules, current_nodules = prior.nodules(threshold), current.nodules(threshold)
    pairs, vanished, new = match_nodules(prior_nodules, current_nodules, registration.current_to_prior, days, matching)
    return Comparison(
        prior=ScanSummary(prior.series_uid, prior.source, study_dates[0], len(prior_nodules)),
        current=ScanSummary(current.series_uid, current.source, study_dates[1], len(current_nodules)),
        interval_days=days,
        interval_from=source,
        threshold=threshold,
        registration=registration,
        pairs=tuple(pairs),
        vanished=tuple((i + 1, prior_nodules[i]) for i in vanished),
        new=tuple((j + 1, current_nodules[j]) for j in new),
        warnings=same_patient_warnings(patient_ids, registration),
    )
