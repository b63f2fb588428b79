"""RigidPose: points and voxels moved the same way, as SimpleITK's transforms move them."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.geometry import Geometry
from ct_pipeline.pose import RigidPose, repose_hu, rotation_matrix


def test_rotation_is_orthonormal_and_turns_by_the_angle_about_the_axis():
    rotation = rotation_matrix(np.array([0.0, 0.0, 2.0]), np.radians(90.0))
    np.testing.assert_allclose(rotation @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    pose = RigidPose(3.0, (0.3, -0.2, 0.9), (4.0, -5.0, 2.0), (10.0, 20.0, -30.0))
    np.testing.assert_allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-12)
    axis = np.array(pose.axis_xyz) / np.linalg.norm(pose.axis_xyz)
    np.testing.assert_allclose(pose.rotation @ axis, axis, atol=1e-12)
    angle = np.degrees(np.arccos((np.trace(pose.rotation) - 1) / 2))
    assert angle == pytest.approx(3.0)


def test_the_centre_moves_by_the_translation_alone():
    pose = RigidPose(4.0, (1.0, 1.0, 0.0), (4.0, -5.0, 2.0), (10.0, 20.0, -30.0))
    np.testing.assert_allclose(pose.apply(np.array(pose.center_xyz)), [14.0, 15.0, -28.0])


def test_repose_moves_a_bright_ball_to_where_the_pose_sends_its_centre():
    geometry = Geometry((-40.0, -40.0, -30.0), (1.25, 1.25, 2.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    shape = (32, 64, 64)
    ball_xyz = geometry.irc_to_xyz(np.array([16.0, 24.0, 40.0]))
    points = geometry.irc_to_xyz(np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)
    hu = np.where(np.linalg.norm(points - ball_xyz, axis=-1) <= 6.0, 100.0, -800.0).astype(np.float32)
    pose = RigidPose(5.0, (0.2, 0.4, 1.0), (3.0, -4.0, 5.0), tuple(geometry.irc_to_xyz(np.array([16.0, 32.0, 32.0]))))
    moved = repose_hu(hu, geometry, pose)

    def centroid_xyz(image):  # weighted by brightness above the background: sub-voxel
        weights = (image + 800.0).ravel()
        return (points.reshape(-1, 3) * weights[:, None]).sum(axis=0) / weights.sum()

    np.testing.assert_allclose(centroid_xyz(moved), pose.apply(centroid_xyz(hu)), atol=0.1)
    assert np.linalg.norm(centroid_xyz(moved) - centroid_xyz(hu)) > 5.0  # it did move
    assert (moved + 800).sum() == pytest.approx((hu + 800).sum(), rel=0.02)  # and kept its size
