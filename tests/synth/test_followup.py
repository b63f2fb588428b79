"""`ct synth --follow-up`: a later scan of each series whose pose and nodule changes are known."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from ct_pipeline.loading import load_ct
from ct_pipeline.pose import RigidPose
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from ct_pipeline.synth.followup import FOLLOW_UP_DIR, study_date


def _rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _pose(row) -> RigidPose:
    def triple(prefix):
        return tuple(float(row[f"{prefix}{a}"]) for a in "XYZ")

    return RigidPose(float(row["angle_deg"]), triple("axis"), triple("shift"), triple("center"))


def _xyz(row, when):
    return np.array([float(row[f"{when}_coord{a}"]) for a in "XYZ"])


@pytest.fixture(scope="module")
def follow_ups(tmp_path_factory):
    root = tmp_path_factory.mktemp("fu")
    write_synthetic_dataset(SynthConfig(out_dir=root, n_series=3, seed=11, size="small", dicom=True, follow_up=True))
    return root


def test_the_prior_series_are_the_same_bytes_as_without_follow_ups(follow_ups, tmp_path):
    write_synthetic_dataset(SynthConfig(out_dir=tmp_path, n_series=3, seed=11, size="small", dicom=True))
    for name in ("annotations.csv", "candidates.csv", "nodule_truth.csv"):
        assert (tmp_path / name).read_bytes() == (follow_ups / name).read_bytes()
    for raw in (tmp_path / "subset0").glob("*.raw"):
        assert (
            hashlib.sha256(raw.read_bytes()).digest()
            == hashlib.sha256((follow_ups / "subset0" / raw.name).read_bytes()).digest()
        )
    assert not (tmp_path / FOLLOW_UP_DIR).exists()


def test_each_series_has_a_later_scan_with_a_known_pose_and_interval(follow_ups):
    pairs = _rows(follow_ups / "followup_pairs.csv")
    assert len(pairs) == 3
    for pair in pairs:
        prior = load_ct(follow_ups / "dicom" / pair["prior_seriesuid"])
        current = load_ct(follow_ups / "dicom" / pair["current_seriesuid"])
        assert (follow_ups / FOLLOW_UP_DIR / f"{pair['current_seriesuid']}.mhd").is_file()
        assert prior.series_uid != current.series_uid and prior.shape_irc == current.shape_irc
        assert current.meta["study_date"] == study_date(int(pair["interval_days"])) != prior.meta["study_date"]
        pose = _pose(pair)
        assert 2.0 <= abs(pose.angle_deg) <= 4.0 and 3.0 <= np.linalg.norm(pose.translation_xyz) <= 8.0
        # The anatomy moved: the scans differ, yet the lungs' air is as large in both.
        assert np.mean(prior.hu != current.hu) > 0.5
        assert np.mean(current.hu < -400) == pytest.approx(np.mean(prior.hu < -400), rel=0.03)


def test_the_truth_holds_every_nodule_where_the_images_show_it(follow_ups):
    truth = _rows(follow_ups / "followup_truth.csv")
    poses = {p["prior_seriesuid"]: _pose(p) for p in _rows(follow_ups / "followup_pairs.csv")}
    prior_truth = _rows(follow_ups / "nodule_truth.csv")
    assert sum(r["status"] != "new" for r in truth) == len(prior_truth)
    assert {r["status"] for r in truth} <= {"grown", "stable", "shrunk", "vanished", "new"}
    for row in truth:
        if row["status"] in ("grown", "stable", "shrunk"):
            factor = float(row["current_volume_mm3"]) / float(row["prior_volume_mm3"])
            assert factor == pytest.approx(1.0 + float(row["volume_change_pct"]) / 100.0, abs=2e-3)
            assert float(row["current_diameter_mm"]) == pytest.approx(
                float(row["prior_diameter_mm"]) * factor ** (1 / 3)
            )
            np.testing.assert_allclose(
                poses[row["prior_seriesuid"]].apply(_xyz(row, "prior")), _xyz(row, "current"), atol=1e-6
            )
        if row["current_coordX"] and row["kind"] == "solid" and float(row["current_diameter_mm"]) >= 8.0:
            current = load_ct(follow_ups / FOLLOW_UP_DIR / f"{row['current_seriesuid']}.mhd")
            i, r, c = current.geometry.xyz_to_irc_rounded(_xyz(row, "current"))
            assert current.hu[i, r, c] > -300, row  # solid nodule tissue, not lung
