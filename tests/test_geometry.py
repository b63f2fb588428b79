"""xyz <-> irc must agree with SimpleITK on oblique, anisotropic grids, not only on identity."""

import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.geometry import Geometry


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:  # keep some reflections too: half the grids are left-handed
        q[:, 0] *= -1 if rng.random() < 0.5 else 1
    return q


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_matches_simpleitk_on_random_oblique_grids(seed):
    rng = np.random.default_rng(seed)
    direction = _random_rotation(rng)
    spacing_xyz = tuple(rng.uniform(0.4, 3.0, size=3))
    origin_xyz = tuple(rng.uniform(-400, 400, size=3))
    geometry = Geometry(origin_xyz, spacing_xyz, tuple(direction.ravel()))

    image = sitk.Image(5, 6, 7, sitk.sitkInt16)
    image.SetOrigin(origin_xyz)
    image.SetSpacing(spacing_xyz)
    image.SetDirection(tuple(direction.ravel()))

    irc = rng.uniform(-20, 300, size=(50, 3))
    xyz = geometry.irc_to_xyz(irc)
    for point_irc, point_xyz in zip(irc, xyz):
        expected_xyz = image.TransformContinuousIndexToPhysicalPoint(tuple(point_irc[::-1]))
        assert np.allclose(point_xyz, expected_xyz, atol=1e-6, rtol=0)
        expected_cri = image.TransformPhysicalPointToContinuousIndex(tuple(point_xyz))
        assert np.allclose(geometry.xyz_to_irc(point_xyz), expected_cri[::-1], atol=1e-6, rtol=0)
    assert np.allclose(geometry.xyz_to_irc(xyz), irc, atol=1e-9)


def test_irc_is_index_row_col_not_xyz_order():
    geometry = Geometry((10.0, 20.0, 30.0), (0.5, 0.7, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    # index (slice) moves z, row moves y, col moves x
    assert np.allclose(geometry.irc_to_xyz((1, 0, 0)), (10.0, 20.0, 32.5))
    assert np.allclose(geometry.irc_to_xyz((0, 1, 0)), (10.0, 20.7, 30.0))
    assert np.allclose(geometry.irc_to_xyz((0, 0, 1)), (10.5, 20.0, 30.0))
    assert geometry.xyz_to_irc_rounded((10.5, 21.4, 35.0)).tolist() == [2, 2, 1]


def test_flipped_axis_direction_is_honoured():
    geometry = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 2.0), (1, 0, 0, 0, -1, 0, 0, 0, -1))
    assert np.allclose(geometry.irc_to_xyz((3, 4, 5)), (5.0, -4.0, -6.0))
    assert np.allclose(geometry.xyz_to_irc((5.0, -4.0, -6.0)), (3, 4, 5))
