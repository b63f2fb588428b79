"""ct_pipeline.synth.config: validation, UIDs, and the geometry of each series."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.paths import is_series_uid
from ct_pipeline.synth.config import SIZES, SynthConfig, direction_kinds, plan_series, series_uid_for


def _config(**kwargs) -> SynthConfig:
    return SynthConfig(**{"out_dir": Path("unused"), "n_series": 8, "seed": 3, "size": "small", **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_series": 0}, r"--series 0 must be a whole number from 1 to 10000"),
        ({"n_series": 2.5}, r"--series 2.5 must be a whole number"),
        ({"seed": -1}, r"--seed -1 must be a whole number from 0 to 4294967295"),
        ({"seed": 2**32}, r"--seed 4294967296 must be"),
        ({"size": "huge"}, r"--size 'huge' must be one of small, medium, full"),
        ({"oblique_fraction": 1.5}, r"oblique-fraction 1.5 must be a number from 0 to 1"),
        ({"flip_fraction": -0.1}, r"flip-fraction -0.1 must be a number from 0 to 1"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(BadInputError, match=message):
        _config(**kwargs)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1])
def test_series_uids_valid_unique_and_stable(seed):
    uids = [series_uid_for(seed, i) for i in range(200)]
    assert all(is_series_uid(uid) for uid in uids)
    assert all(len(uid) <= 59 for uid in uids), "room for a '.<slice>' suffix"
    assert len(set(uids)) == len(uids)
    assert uids[7] == series_uid_for(seed, 7)
    assert series_uid_for(seed, 0) != series_uid_for(seed + 1, 0)


def test_direction_kinds_counts():
    kinds = direction_kinds(_config(n_series=20, oblique_fraction=0.1, flip_fraction=0.15))
    assert sum(oblique for oblique, _ in kinds) == 2
    assert sum(any(flips) for _, flips in kinds) == 3
    assert all(sum(flips) in (0, 2) for _, flips in kinds), "two flips keep the direction right-handed"
    one = direction_kinds(_config(n_series=1, oblique_fraction=0.1))
    assert one[0][0], "a single series is oblique when oblique_fraction > 0"
    assert not any(o for o, _ in direction_kinds(_config(oblique_fraction=0.0)))
    assert all(o for o, _ in direction_kinds(_config(oblique_fraction=1.0)))


@pytest.mark.parametrize("size", ["small", "medium", "full"])
def test_layouts_have_realistic_grids(size):
    config = _config(size=size, n_series=30)
    preset = SIZES[size]
    for index, (oblique, flips) in enumerate(direction_kinds(config)):
        layout = plan_series(config, index, oblique, flips)
        n_slices, rows, cols = layout.shape_irc
        assert rows == cols == preset.cols
        assert preset.slices[0] <= n_slices <= preset.slices[1]
        sx, sy, sz = layout.spacing_xyz
        assert sx == sy and preset.fov_mm[0] <= sx * cols <= preset.fov_mm[1]
        assert sz in preset.slice_spacings_mm
        direction = layout.geometry.direction_matrix
        np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
        assert np.linalg.det(direction) == pytest.approx(1.0)
        assert np.allclose(direction, np.diag(np.diag(direction))) != oblique
    full = SIZES["full"]
    assert full.cols == 512 and 0.5 <= full.fov_mm[0] / 512 and full.fov_mm[1] / 512 <= 0.9
    assert min(full.slice_spacings_mm) >= 0.6 and max(full.slice_spacings_mm) <= 2.5


def test_flips_and_rotation_keep_the_patient_upright():
    """A flipped twin puts every anatomy point at the same patient xyz; an oblique one nearly so."""
    config = _config()
    upright = plan_series(config, 2, False, (False, False, False))
    points_mm = np.random.default_rng(0).uniform(-150, 150, size=(50, 3))
    for flips in [(False, True, True), (True, True, False), (True, False, True)]:
        flipped = plan_series(config, 2, False, flips)
        assert flipped.series_uid == upright.series_uid
        np.testing.assert_allclose(
            flipped.anatomy_mm_to_xyz(points_mm), upright.anatomy_mm_to_xyz(points_mm), atol=1e-5
        )
        # The stored array holds canonical voxel v at the flipped index.
        canonical = np.arange(np.prod(flipped.shape_irc)).reshape(flipped.shape_irc)
        v = np.array([3, 10, 100])
        u = flipped.canonical_irc_to_stored_irc(v).astype(int)
        assert flipped.to_stored(canonical)[tuple(u)] == canonical[tuple(v)]
        assert tuple(u) != tuple(v)
    oblique = plan_series(config, 2, True, (False, True, True))
    offsets = oblique.anatomy_mm_to_xyz(points_mm) - upright.anatomy_mm_to_xyz(points_mm)
    assert 1.0 < np.abs(offsets).max() < 0.25 * 300  # rotated by 4-12 degrees, not flipped over
    back_minus_front = oblique.anatomy_mm_to_xyz(np.array([[0, 100, 50], [0, -100, 50]]))
    assert back_minus_front[0, 1] - back_minus_front[1, 1] > 180  # posterior stays at +y (LPS)


def test_the_slice_z_range_is_the_first_and_last_slice_in_the_anatomy_frame():
    layout = plan_series(_config(), 1, True, (True, True, False))
    first_mm, last_mm = layout.slice_z_range_mm
    assert first_mm < 0.0 < layout.lung_height_mm < last_mm + layout.spacing_xyz[2]  # this series holds the whole lung
    ends_irc = layout.anatomy_mm_to_canonical_irc(np.array([[0.0, 0.0, first_mm], [0.0, 0.0, last_mm]]))
    np.testing.assert_allclose(ends_irc[:, 0], [0.0, layout.shape_irc[0] - 1], atol=1e-9)
    # Back through patient space (flips and rotation) to the same anatomy-frame point.
    point_mm = np.array([10.0, -20.0, last_mm])
    np.testing.assert_allclose(layout.xyz_to_anatomy_mm(layout.anatomy_mm_to_xyz(point_mm)), point_mm, atol=1e-9)


def test_replace_revalidates():
    with pytest.raises(BadInputError):
        replace(_config(), n_series=-3)
