"""Patient coordinates (x, y, z) in millimetres <-> voxel indices (index, row, col).

A CT voxel at integer index ``(i, r, c)`` (slice, row, column; numpy order) sits at patient point

    xyz = origin_xyz + direction @ ((c, r, i) * spacing_xyz)

where ``direction`` is the 3x3 matrix whose columns are the x, y, z axes of the image grid in
patient space (SimpleITK's ``GetDirection()``, row-major). This is the convention of SimpleITK's
``TransformContinuousIndexToPhysicalPoint``; the tests check agreement on random oblique grids.
Note the flip: arrays index as (z, y, x) while spacing/origin/direction speak (x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in patient space.

    Attributes:
        origin_xyz: patient position of voxel (0, 0, 0), mm, shape (3,).
        spacing_xyz: voxel size along the grid's x, y, z axes, mm, shape (3,).
        direction: 3x3 direction cosines, columns = grid axes in patient space.
    """

    origin_xyz: tuple[float, float, float]
    spacing_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def irc_to_xyz(self, irc: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Voxel (index, row, col), possibly fractional, shape (..., 3) -> patient xyz mm, shape (..., 3)."""
        irc_arr = np.asarray(irc, dtype=np.float64)
        cri = irc_arr[..., ::-1]
        scaled = cri * np.asarray(self.spacing_xyz, dtype=np.float64)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin_xyz, dtype=np.float64)

    def xyz_to_irc(self, xyz: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Patient xyz mm, shape (..., 3) -> continuous voxel (index, row, col), shape (..., 3).

        Uses a linear solve rather than the transpose so that non-orthonormal direction
        matrices (rare, but found in the wild) still invert exactly.
        """
        xyz_arr = np.asarray(xyz, dtype=np.float64)
        offset = xyz_arr - np.asarray(self.origin_xyz, dtype=np.float64)
        cri_scaled = np.linalg.solve(self.direction_matrix, offset.reshape(-1, 3).T).T
        cri = cri_scaled / np.asarray(self.spacing_xyz, dtype=np.float64)
        return cri[:, ::-1].reshape(xyz_arr.shape)

    def xyz_to_irc_rounded(self, xyz: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Like :meth:`xyz_to_irc` but rounded to the nearest voxel, dtype int64."""
        return np.rint(self.xyz_to_irc(xyz)).astype(np.int64)


def image_on_grid(array: np.ndarray, geometry: Geometry):
    """A SimpleITK image of ``array`` ((index, row, col)) placed by ``geometry``: what a writer of
    NRRD/MHD or SimpleITK's resampling needs."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetOrigin(geometry.origin_xyz)
    image.SetSpacing(geometry.spacing_xyz)
    image.SetDirection(geometry.direction)
    return image
