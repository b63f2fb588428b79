"""A rigid change of the patient's pose between two scans, in patient millimetres.

``RigidPose`` maps a point of the first scan to where the same anatomy sits in the second:
``moved_xyz = R @ (xyz - center_xyz) + center_xyz + translation_xyz``. ``ct synth --follow-up``
draws its follow-up scans with one, and the tests re-pose the real CT with one, so that
registration (:mod:`ct_pipeline.followup.registration`) has a known answer to find.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ct_pipeline.geometry import Geometry, image_on_grid


def rotation_matrix(axis_xyz: np.ndarray, angle_rad: float) -> np.ndarray:
    """The 3x3 rotation by ``angle_rad`` about ``axis_xyz`` (any length), by Rodrigues' formula."""
    axis = axis_xyz / np.linalg.norm(axis_xyz)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


@dataclass(frozen=True)
class RigidPose:
    """A rotation by ``angle_deg`` about ``axis_xyz`` through ``center_xyz``, then a shift (mm)."""

    angle_deg: float
    axis_xyz: tuple[float, float, float]
    translation_xyz: tuple[float, float, float]
    center_xyz: tuple[float, float, float]

    @property
    def rotation(self) -> np.ndarray:
        """The 3x3 rotation matrix."""
        return rotation_matrix(np.asarray(self.axis_xyz, dtype=np.float64), math.radians(self.angle_deg))

    def apply(self, points_xyz: np.ndarray) -> np.ndarray:
        """First-scan patient points (..., 3) -> where they are in the second scan (..., 3)."""
        center = np.asarray(self.center_xyz, dtype=np.float64)
        points = np.asarray(points_xyz, dtype=np.float64) - center
        return points @ self.rotation.T + center + np.asarray(self.translation_xyz, dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "angle_deg": float(self.angle_deg),
            "axis_xyz": [float(v) for v in self.axis_xyz],
            "translation_xyz": [float(v) for v in self.translation_xyz],
            "center_xyz": [float(v) for v in self.center_xyz],
        }


def repose_hu(hu: np.ndarray, geometry: Geometry, pose: RigidPose) -> np.ndarray:
    """``hu`` ((index, row, col) on ``geometry``) with its content moved by ``pose``, on the same grid.

    Linear interpolation. Voxels whose source lies outside the scan take the nearest voxel's
    value: the body goes on past the first and last slice (air there would open the lungs to
    the outside). Returns float32 (the caller rounds, after adding noise where it wants some).
    """
    import SimpleITK as sitk

    image = image_on_grid(np.asarray(hu, dtype=np.float32), geometry)
    moved = sitk.AffineTransform(3)
    moved.SetCenter(tuple(float(v) for v in pose.center_xyz))
    moved.SetMatrix(tuple(float(v) for v in pose.rotation.ravel()))
    moved.SetTranslation(tuple(float(v) for v in pose.translation_xyz))
    # Resampling asks, for each output point, where to read the input: the inverse pose.
    resampled = sitk.Resample(
        image, image, moved.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, useNearestNeighborExtrapolator=True
    )
    return sitk.GetArrayFromImage(resampled)
