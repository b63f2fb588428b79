"""``ct synth --follow-up``: a second scan of each phantom, months later, with known changes.

The follow-up is the same patient drawn again (anatomy and vessels from the same streams) with
three things changed, each written to ``followup_truth.csv`` and ``followup_pairs.csv``:

- the pose: the patient lies 2-4 degrees rotated about a random axis through the lungs' centre
  and shifted 3-8 mm (:class:`~ct_pipeline.pose.RigidPose`), on the same grid, as a scanner would
  see it: the anatomy is resampled into the new pose, and the nodules are then drawn where the
  pose puts them (resampling a drawn nodule blurs it: unchanged nodules measured 2-36 % smaller);
- the nodules: each grows (volume x1.4-2.6), stays (x0.9-1.1), shrinks (x0.45-0.75) or, for
  some under 8 mm, vanishes; about half the series get a new one;
- the noise: a fresh draw.

The interval between the scans is 60-400 days, in the DICOM StudyDate with ``--dicom``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ct_pipeline.pose import RigidPose
from ct_pipeline.synth.config import SynthConfig, series_uid_for
from ct_pipeline.synth.layout import SeriesLayout
from ct_pipeline.synth.nodules import Nodule, clear_of, sample_nodules, shape_volume_mm3
from ct_pipeline.synth.streams import Stream, series_rng

FOLLOW_UP_DIR = "followup"
_UID_OFFSET = 10_000  # follow-up of series k is named like series k + 10000 (at most 10000 series)
_CHANGES = (("grown", 1.4, 2.6), ("stable", 0.9, 1.1), ("shrunk", 0.45, 0.75))
_CHANGE_P = (0.45, 0.3, 0.25)
_VANISH_P = 0.3  # of nodules under _VANISH_BELOW_MM
_VANISH_BELOW_MM = 8.0
_NEW_P = 0.5
PAIR_HEADER = [
    "prior_seriesuid",
    "current_seriesuid",
    "interval_days",
    "angle_deg",
    "axisX",
    "axisY",
    "axisZ",
    "shiftX",
    "shiftY",
    "shiftZ",
    "centerX",
    "centerY",
    "centerZ",
]
TRUTH_HEADER = [
    "prior_seriesuid",
    "current_seriesuid",
    "interval_days",
    "nodule",
    "status",
    "prior_coordX",
    "prior_coordY",
    "prior_coordZ",
    "current_coordX",
    "current_coordY",
    "current_coordZ",
    "prior_diameter_mm",
    "current_diameter_mm",
    "prior_volume_mm3",
    "current_volume_mm3",
    "volume_change_pct",
    "kind",
    "juxtapleural",
]


@dataclass(frozen=True)
class FollowUpPlan:
    """What changes between a series and its follow-up.

    Attributes:
        series_uid: the follow-up's UID.
        interval_days: days between the two scans.
        pose: prior patient mm -> follow-up patient mm.
        volume_factors: per prior nodule, its volume's factor (0: vanished).
        n_new: nodules that appear (placed when the follow-up is drawn; fewer if none fits).
    """

    series_uid: str
    interval_days: int
    pose: RigidPose
    volume_factors: tuple[float, ...]
    n_new: int

    def revise(self, rng: np.random.Generator, phantom, layout: SeriesLayout, nodules: list[Nodule]) -> list[Nodule]:
        """The follow-up's nodules: the prior ones scaled by their factors (vanished ones left
        out), in order, then the new ones."""
        kept = [grown(n, f) for n, f in zip(nodules, self.volume_factors) if f > 0]
        new: list[Nodule] = []
        for _ in range(20):  # sample_nodules draws 0-4 placed nodules; keep those clear of the others
            if len(new) >= self.n_new:
                break
            new += [
                n
                for n in sample_nodules(rng, phantom, layout)
                if clear_of(np.array(n.center_mm), n.max_radius_mm, kept + new)
            ][: self.n_new - len(new)]
        return kept + new


def moved(nodule: Nodule, layout: SeriesLayout, pose: RigidPose) -> Nodule:
    """``nodule`` where ``pose`` puts it, in the anatomy frame of ``layout``'s grid: its centre
    moved and its lobes and spicules turned (the follow-up draws it there, sharp, rather than
    interpolating a drawn nodule, which would blur it smaller)."""
    center = np.asarray(nodule.center_mm, dtype=np.float64)
    moved_center = layout.xyz_to_anatomy_mm(pose.apply(layout.anatomy_mm_to_xyz(center)))

    def turned(u) -> tuple[float, float, float]:
        tip = layout.xyz_to_anatomy_mm(pose.apply(layout.anatomy_mm_to_xyz(center + np.asarray(u))))
        direction = tip - moved_center
        return tuple(float(v) for v in direction / np.linalg.norm(direction))  # type: ignore[return-value]

    return dataclasses.replace(
        nodule,
        center_mm=tuple(float(v) for v in moved_center),  # type: ignore[arg-type]
        lobes=tuple((*turned(lobe[:3]), *lobe[3:]) for lobe in nodule.lobes),  # type: ignore[misc]
        spicules=tuple((*turned(spicule[:3]), spicule[3]) for spicule in nodule.spicules),  # type: ignore[misc]
    )


def grown(nodule: Nodule, volume_factor: float) -> Nodule:
    """``nodule`` with its volume times ``volume_factor`` (the shape scaled, its centre kept)."""
    scale = volume_factor ** (1.0 / 3.0)
    return dataclasses.replace(
        nodule, diameter_mm=nodule.diameter_mm * scale, max_radius_mm=nodule.max_radius_mm * scale
    )


def follow_up_uid(seed: int, index: int) -> str:
    return series_uid_for(seed, index + _UID_OFFSET)


def plan_follow_up(config: SynthConfig, layout: SeriesLayout, nodules: list[Nodule]) -> FollowUpPlan:
    """Draw the pose, the interval and each nodule's change from the series' own stream 11."""
    rng = series_rng(config.seed, layout.index, Stream.FOLLOW_UP_PLAN)
    axis = rng.normal(size=3)
    shift_direction = rng.normal(size=3)
    shift = shift_direction / np.linalg.norm(shift_direction) * rng.uniform(3.0, 8.0)
    center = layout.anatomy_mm_to_xyz(np.array([0.0, 0.0, layout.lung_height_mm / 2.0]))
    pose = RigidPose(
        angle_deg=round(float(rng.uniform(2.0, 4.0) * rng.choice([-1.0, 1.0])), 3),
        axis_xyz=tuple(round(float(v), 4) for v in axis / np.linalg.norm(axis)),  # type: ignore[arg-type]
        translation_xyz=tuple(round(float(v), 3) for v in shift),  # type: ignore[arg-type]
        center_xyz=tuple(round(float(v), 3) + 0.0 for v in center),  # type: ignore[arg-type]  (no -0.0)
    )
    factors = []
    for nodule in nodules:
        draw = rng.uniform()
        if nodule.diameter_mm < _VANISH_BELOW_MM and draw < _VANISH_P:
            factors.append(0.0)
            continue
        _, low, high = _CHANGES[int(rng.choice(len(_CHANGES), p=_CHANGE_P))]
        factors.append(round(float(rng.uniform(low, high)), 3))
    return FollowUpPlan(
        series_uid=follow_up_uid(config.seed, layout.index),
        interval_days=int(rng.integers(60, 401)),
        pose=pose,
        volume_factors=tuple(factors),
        n_new=int(rng.uniform() < _NEW_P),
    )


def status_of(volume_factor: float) -> str:
    if volume_factor == 0:
        return "vanished"
    return next(name for name, low, high in _CHANGES if low <= volume_factor <= high)


def _fmt(value: float) -> str:
    return f"{float(value):.10g}"


def pair_row(prior_uid: str, plan: FollowUpPlan) -> list[str]:
    pose = plan.pose
    return [
        prior_uid,
        plan.series_uid,
        str(plan.interval_days),
        _fmt(pose.angle_deg),
        *(_fmt(v) for v in pose.axis_xyz),
        *(_fmt(v) for v in pose.translation_xyz),
        *(_fmt(v) for v in pose.center_xyz),
    ]


def truth_rows(
    prior_uid: str, layout: SeriesLayout, plan: FollowUpPlan, prior: list[Nodule], after: list[Nodule]
) -> list[list[str]]:
    """One row per nodule of either scan: its centres (patient mm) and volumes in both.
    ``after``: the follow-up's nodules as drawn (moved: :func:`moved`), in :meth:`FollowUpPlan.revise`'s order."""

    def xyz(nodule: Nodule) -> np.ndarray:
        return layout.anatomy_mm_to_xyz(np.array(nodule.center_mm))

    rows = []
    later = iter(after)
    for number, (nodule, factor) in enumerate(zip(prior, plan.volume_factors), start=1):
        volume = shape_volume_mm3(nodule)
        now = next(later) if factor > 0 else None
        current = ["", "", "", ""] if now is None else [*(_fmt(v) for v in xyz(now)), _fmt(now.diameter_mm)]
        rows.append(
            [
                prior_uid,
                plan.series_uid,
                str(plan.interval_days),
                str(number),
                status_of(factor),
                *(_fmt(v) for v in xyz(nodule)),
                *current[:3],
                _fmt(nodule.diameter_mm),
                current[3],
                _fmt(volume),
                "" if now is None else _fmt(volume * factor),
                _fmt(100.0 * (factor - 1.0)),
                nodule.kind,
                str(nodule.juxtapleural),
            ]
        )
    for new in later:
        rows.append(
            [
                prior_uid,
                plan.series_uid,
                str(plan.interval_days),
                "",
                "new",
                "",
                "",
                "",
                *(_fmt(v) for v in xyz(new)),
                "",
                _fmt(new.diameter_mm),
                "",
                _fmt(shape_volume_mm3(new)),
                "",
                new.kind,
                str(new.juxtapleural),
            ]
        )
    return rows


def study_date(interval_days: int, first: str = "20000101") -> str:
    """The DICOM date ``interval_days`` after ``first`` (YYYYMMDD)."""
    import datetime

    start = datetime.date(int(first[:4]), int(first[4:6]), int(first[6:]))
    return (start + datetime.timedelta(days=interval_days)).strftime("%Y%m%d")
