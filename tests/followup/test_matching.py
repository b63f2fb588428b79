"""Pairing two scans' nodules in the registered frame; volume change, doubling time, interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.diagnosis.volumetry import MaskMeasurement
from ct_pipeline.errors import BadInputError
from ct_pipeline.followup.comparison import compare_scans, scan_interval
from ct_pipeline.followup.matching import MatchConfig, doubling_time_days, match_nodules, volume_change_pct
from ct_pipeline.followup.registration import Registration

SHIFT = np.array([5.0, -7.0, 3.0])  # CURRENT = PRIOR + SHIFT


def _finding(xyz, volume_mm3=500.0, prob=0.9, diameter_mm=8.0) -> Finding:
    measured = MaskMeasurement(volume_mm3, 10.0, 8.0, 9.0, 12, 20.0, 30.0, 400)
    return Finding(tuple(float(v) for v in xyz), (12, 100, 100), diameter_mm, prob, measurement=measured)


def _shifted(points):
    return np.asarray(points) - SHIFT


def _registration() -> Registration:
    return Registration(
        (1, 0, 0, 0, 1, 0, 0, 0, 1), tuple(SHIFT), (0.0, 0.0, 0.0), 0.0, float(np.linalg.norm(SHIFT)), 0.9, 0.99, 1.0
    )


def test_nodules_pair_by_nearest_place_after_registration_and_the_rest_are_new_or_vanished():
    prior = [_finding((0, 0, 0), 500), _finding((30, 0, 0), 200), _finding((-40, 10, 0), 100)]
    # The second current nodule sits where prior #1 does once the shift is undone; #1 is prior #2, doubled.
    current = [
        _finding(np.array((31, 1, 0)) + SHIFT, 400),
        _finding(np.array((1, 0, 1)) + SHIFT, 450),
        _finding(np.array((0, 60, 0)) + SHIFT, 50),
    ]
    pairs, vanished, new = match_nodules(prior, current, _shifted, interval_days=100.0)
    assert [(p.prior_rank, p.current_rank) for p in pairs] == [(1, 2), (2, 1)]
    assert pairs[0].distance_mm == pytest.approx(math.sqrt(2))
    assert pairs[0].volume_change_pct == pytest.approx(-10.0) and pairs[0].doubling_time_days is None
    assert pairs[1].volume_change_pct == pytest.approx(100.0) and pairs[1].doubling_time_days == pytest.approx(100.0)
    assert vanished == [2] and new == [2]


def test_without_registration_the_shifted_nodules_would_not_pair():
    prior = [_finding((0, 0, 0))]
    current = [_finding(np.array((0, 0, 0)) + 3 * SHIFT)]  # 27 mm away
    pairs, vanished, new = match_nodules(
        prior, current, lambda p: np.asarray(p), config=MatchConfig(max_distance_mm=10)
    )
    assert pairs == [] and vanished == [0] and new == [0]
    big = [_finding((0, 0, 0), diameter_mm=60.0)]  # within half a large nodule's diameter
    assert len(match_nodules(big, current, lambda p: np.asarray(p))[0]) == 1


def test_volume_change_and_doubling_time():
    assert volume_change_pct(200.0, 300.0) == pytest.approx(50.0)
    assert volume_change_pct(None, 300.0) is None
    assert doubling_time_days(100.0, 400.0, 90.0) == pytest.approx(45.0)  # two doublings in 90 days
    assert doubling_time_days(100.0, 100.0, 90.0) is None  # no growth: no doubling time
    assert doubling_time_days(100.0, 400.0, None) is None


def test_the_interval_comes_from_the_study_dates_unless_given():
    assert scan_interval("20240101", "20240701", None) == (182.0, "StudyDate")
    assert scan_interval("20240101", "", None) == (None, "")
    assert scan_interval("20240101", "20240701", 90.0) == (90.0, "--interval-days")
    with pytest.raises(BadInputError, match="give the earlier scan first"):
        scan_interval("20240701", "20240101", None)
    with pytest.raises(BadInputError, match="finite number of days"):
        scan_interval("", "", float("nan"))


def test_compare_scans_uses_the_findings_at_the_threshold_and_says_so_in_json():
    prior = DiagnosisResult("1.2.3", (_finding((0, 0, 0), 500), _finding((30, 0, 0), 200, prob=0.2)), source="a")
    current = DiagnosisResult("1.2.4", (_finding(SHIFT, 750),), source="b")
    comparison = compare_scans(prior, current, _registration(), study_dates=("20240101", "20240402"), threshold=0.5)
    data = comparison.to_dict()
    assert data["interval_days"] == 92.0 and data["interval_from"] == "StudyDate"
    assert data["prior"]["n_nodules"] == 1 and data["vanished"] == [] and data["new"] == []
    (pair,) = data["pairs"]
    assert pair["volume_change_pct"] == 50.0 and pair["current_in_prior_xyz"] == [0.0, 0.0, 0.0]
    assert pair["doubling_time_days"] == pytest.approx(92 * math.log(2) / math.log(1.5), abs=0.1)
    assert pair["prior"]["volume_mm3"] == 500.0 and pair["current"]["slice"] == 12


def test_a_left_over_finding_next_to_a_paired_one_is_named_as_its_likely_fragment():
    prior = DiagnosisResult(
        "1.2.3", (_finding((0, 0, 0), 500), _finding((0, 0, 8), 40, prob=0.8), _finding((50, 0, 0), 40, prob=0.7))
    )
    current = DiagnosisResult("1.2.4", (_finding(SHIFT, 600),))
    comparison = compare_scans(prior, current, _registration())
    vanished = comparison.to_dict()["vanished"]
    assert [(n["rank"], n["near_pair"]) for n in vanished] == [(2, 1), (3, None)]
