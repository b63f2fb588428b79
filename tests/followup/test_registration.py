"""Registration of a follow-up scan to its prior on the lungs, checked against the known pose."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.followup.registration import register_scans
from ct_pipeline.loading import load_ct
from ct_pipeline.pose import RigidPose
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from ct_pipeline.volume import CtVolume


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Two pairs: one series stored oblique (rotated direction), one with two axes flipped."""
    root = tmp_path_factory.mktemp("fu")
    config = SynthConfig(
        out_dir=root, n_series=2, seed=5, size="small", follow_up=True, oblique_fraction=0.5, flip_fraction=0.5
    )
    write_synthetic_dataset(config)
    with open(root / "followup_pairs.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    loaded = []
    for row in rows:
        prior = load_ct(root / "subset0" / f"{row['prior_seriesuid']}.mhd")
        current = load_ct(root / "followup" / f"{row['current_seriesuid']}.mhd")
        triple = lambda name, row=row: tuple(float(row[f"{name}{a}"]) for a in "XYZ")  # noqa: E731
        loaded.append(
            (prior, current, RigidPose(float(row["angle_deg"]), triple("axis"), triple("shift"), triple("center")))
        )
    directions = [np.asarray(p.direction).reshape(3, 3) for p, _, _ in loaded]
    assert sorted(bool(np.any((np.abs(d) > 1e-6) & (np.abs(d) < 0.999))) for d in directions) == [False, True]
    assert any(np.any(np.diag(d) < 0) for d in directions)
    return loaded


def _lung_points(volume: CtVolume, n: int = 200) -> np.ndarray:
    """Patient points of ``n`` lung voxels (air inside the body), spread over the scan."""
    i, r, c = np.nonzero(volume.hu[:, 16:-16, 16:-16] < -700)
    pick = np.random.default_rng(0).choice(len(i), n, replace=False)
    return volume.geometry.irc_to_xyz(np.stack([i[pick], r[pick] + 16, c[pick] + 16], axis=1).astype(float))


def test_registration_finds_the_pose_within_half_a_millimetre_in_the_lungs(pairs):
    for prior, current, pose in pairs:
        found = register_scans(prior, current)
        points = _lung_points(prior)
        error = np.linalg.norm(found.prior_to_current(points) - pose.apply(points), axis=1)
        assert np.median(error) < 0.5 and error.max() < 1.5, (np.median(error), error.max())
        assert found.rigid_angle_deg == pytest.approx(abs(pose.angle_deg), abs=0.3)
        assert found.lung_overlap_after > 0.97 > found.lung_overlap_before
        np.testing.assert_allclose(found.current_to_prior(found.prior_to_current(points)), points, atol=1e-9)


def test_a_scan_without_lungs_is_refused_with_which_one(pairs):
    prior, current, _ = pairs[0]
    no_lungs = CtVolume(np.full(current.shape_irc, 40, dtype=np.int16), current.geometry, "1.2.3", "x", "mhd")
    with pytest.raises(BadInputError, match="CURRENT: no lungs found"):
        register_scans(prior, no_lungs)
