"""The CT volume type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ct_pipeline.geometry import Geometry

HU_AIR = -1000


@dataclass(frozen=True, eq=False)
class CtVolume:
    """A CT series in Hounsfield units.

    Attributes:
        hu: int16 (or float32) array, shape (index, row, col) = (z, y, x).
        geometry: origin, spacing and direction of the grid (all in xyz order).
        series_uid: the DICOM SeriesInstanceUID (LUNA16: the file stem).
        source: the file or folder it was read from.
        format: "mhd", "dicom", "nrrd", "nifti", ...
        modality: DICOM modality when known ("CT"), else "CT" for formats without one.
        meta: a few extra header fields worth showing (strings only).
        source_files: every file the loader read, in the loader's order (an .mhd with its data
            file; a DICOM series' slices by path): what a result's source fingerprint covers.
    """

    hu: np.ndarray
    geometry: Geometry
    series_uid: str
    source: str
    format: str
    modality: str = "CT"
    meta: dict[str, str] = field(default_factory=dict)
    source_files: tuple[str, ...] = ()

    @property
    def shape_irc(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def origin_xyz(self) -> tuple[float, float, float]:
        return self.geometry.origin_xyz

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return self.geometry.spacing_xyz

    @property
    def direction(self) -> tuple[float, ...]:
        return self.geometry.direction

    def describe(self) -> dict:
        """A JSON-ready summary (what ``ct info --json`` prints)."""
        return {
            "series_uid": self.series_uid,
            "source": self.source,
            "format": self.format,
            "modality": self.modality,
            "shape_irc": list(self.shape_irc),
            "spacing_xyz": [float(v) for v in self.spacing_xyz],
            "origin_xyz": [float(v) for v in self.origin_xyz],
            "direction": [float(v) for v in self.direction],
            "dtype": str(self.hu.dtype),
            "hu_min": float(self.hu.min()) if self.hu.size else None,
            "hu_max": float(self.hu.max()) if self.hu.size else None,
            **({"meta": dict(self.meta)} if self.meta else {}),
        }
