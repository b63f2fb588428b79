"""A series' grid and the frames the generator works in: the size presets and :class:`SeriesLayout`.

Every series is drawn in an upright "anatomy frame" (x to the patient's left, y posterior,
z toward the head, in mm from the body axis at the lung base) on a canonical voxel grid whose
axes follow that frame. The stored series differs from the canonical one in two ways only:
a small rotation (an oblique series: the patient lies tilted in patient space) and a flip of two
array axes (the direction has -1 entries, the anatomy stays upright in patient space). Both keep
the direction right-handed, so every series is also representable as DICOM.

Points cross these frames only through :class:`SeriesLayout`'s methods, typed with the aliases
below; nodules, vessels and candidates are kept in the anatomy frame until the CSVs are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from ct_pipeline.geometry import Geometry

AnatomyMm: TypeAlias = np.ndarray
"""Anatomy-frame mm, (..., 3) in (x, y, z) order: from the body axis at the lung base, upright."""
PatientXyz: TypeAlias = np.ndarray
"""Patient mm, (..., 3) in (x, y, z) order, of the stored series: what LUNA16's CSVs hold."""
CanonicalIrc: TypeAlias = np.ndarray
"""Continuous (index, row, col), (..., 3), of the canonical array: upright, no axis flipped."""
StoredIrc: TypeAlias = np.ndarray
"""Continuous (index, row, col), (..., 3), of the array as written: flipped axes reversed."""


@dataclass(frozen=True)
class SizePreset:
    """Grid limits of one size: in-plane voxels, field of view and slice ranges (mm)."""

    cols: int
    fov_mm: tuple[float, float]
    slice_spacings_mm: tuple[float, ...]
    slices: tuple[int, int]
    coverage_mm: tuple[float, float]
    candidates_per_series: tuple[int, int]


SIZES: dict[str, SizePreset] = {
    # 128 x 128 over a real chest's 280-350 mm field of view: 2.2-2.7 mm voxels, 3-4.5 mm slices.
    "small": SizePreset(128, (280.0, 350.0), (3.0, 3.25, 3.5, 3.75, 4.0, 4.5), (40, 80), (230.0, 310.0), (80, 220)),
    # 256 x 256 at 1.1-1.4 mm, 1.25-2.5 mm slices: nodules 4-25 voxels wide, enough for the book's
    # voxel-sized crops to see them (on "small" a 5 mm nodule is 2 voxels), at a sixth of "full"'s size.
    "medium": SizePreset(256, (280.0, 350.0), (1.25, 1.5, 1.75, 2.0, 2.5), (90, 250), (230.0, 310.0), (200, 500)),
    # 512 x 512 at 0.55-0.88 mm, slice spacings seen in LUNA16.
    "full": SizePreset(
        512, (280.0, 450.0), (0.625, 0.7, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5), (100, 300), (240.0, 340.0), (300, 900)
    ),
}


@dataclass(frozen=True)
class SeriesLayout:
    """One series' grid: canonical (anatomy-aligned) shape and the stored geometry.

    Attributes:
        index: 0-based position in the data set.
        series_uid: valid DICOM UID.
        shape_irc: array shape (index, row, col).
        geometry: the stored series' geometry (after flips and rotation).
        flips_irc: which array axes of the canonical array are reversed on storage.
        oblique: the direction includes a small rotation.
        body_center_mm: anatomy-frame origin (body axis at the lung base) in canonical grid mm,
            (x, y, z) from voxel (0, 0, 0).
        lung_height_mm: lung base to apex.
    """

    index: int
    series_uid: str
    shape_irc: tuple[int, int, int]
    geometry: Geometry
    flips_irc: tuple[bool, bool, bool]
    oblique: bool
    body_center_mm: tuple[float, float, float]
    lung_height_mm: float

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return self.geometry.spacing_xyz

    @property
    def slice_z_range_mm(self) -> tuple[float, float]:
        """Anatomy-frame z (mm) of the first and the last canonical slice's centre."""
        first = -self.body_center_mm[2]
        return first, (self.shape_irc[0] - 1) * self.spacing_xyz[2] - self.body_center_mm[2]

    def anatomy_mm_to_canonical_irc(self, points_mm: AnatomyMm) -> CanonicalIrc:
        """Anatomy-frame mm -> continuous canonical irc."""
        grid_mm = np.asarray(points_mm, dtype=np.float64) + np.asarray(self.body_center_mm)
        return (grid_mm / np.asarray(self.spacing_xyz))[..., ::-1]

    def canonical_irc_to_stored_irc(self, irc: CanonicalIrc) -> StoredIrc:
        """Continuous irc of the canonical array -> irc of the stored (flipped) array; also the inverse."""
        irc = np.array(irc, dtype=np.float64)
        for axis, flipped in enumerate(self.flips_irc):
            if flipped:
                irc[..., axis] = (self.shape_irc[axis] - 1) - irc[..., axis]
        return irc

    def anatomy_mm_to_xyz(self, points_mm: AnatomyMm) -> PatientXyz:
        """Anatomy-frame mm -> patient xyz mm of the stored series, via its geometry."""
        stored_irc = self.canonical_irc_to_stored_irc(self.anatomy_mm_to_canonical_irc(points_mm))
        return self.geometry.irc_to_xyz(stored_irc)

    def xyz_to_anatomy_mm(self, points_xyz: PatientXyz) -> AnatomyMm:
        """Patient xyz mm of the stored series -> anatomy-frame mm: the inverse of :meth:`anatomy_mm_to_xyz`."""
        canonical_irc = self.canonical_irc_to_stored_irc(self.geometry.xyz_to_irc(points_xyz))  # its own inverse
        return canonical_irc[..., ::-1] * np.asarray(self.spacing_xyz) - np.asarray(self.body_center_mm)

    def to_stored(self, canonical: np.ndarray) -> np.ndarray:
        """The canonical (index, row, col) array as stored: flipped axes reversed (a view)."""
        slices = tuple(slice(None, None, -1) if flipped else slice(None) for flipped in self.flips_irc)
        return canonical[slices]
