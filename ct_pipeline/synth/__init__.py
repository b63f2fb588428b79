"""LUNA16-format synthetic chest CTs with known nodules: ``write_synthetic_dataset(config)``.

Reading order: ``layout`` (grids and frames) -> ``config`` (options; grids and geometry per series) -> ``phantom`` (body, bones,
mediastinum, lungs) -> ``vessels`` -> ``nodules`` -> ``candidates`` -> ``writer`` (noise, files);
``followup`` plans each series' later scan (``--follow-up``).
``drawing`` holds the shared voxel-drawing helpers. Nothing is imported eagerly beyond these
small modules (no SimpleITK until DICOM is written).
"""

from ct_pipeline.synth.config import SynthConfig
from ct_pipeline.synth.layout import SIZES, SeriesLayout
from ct_pipeline.synth.writer import (
    SeriesSummary,
    SyntheticSeries,
    SynthResult,
    generate_series,
    write_synthetic_dataset,
)

__all__ = [
    "SIZES",
    "SeriesLayout",
    "SeriesSummary",
    "SynthConfig",
    "SynthResult",
    "SyntheticSeries",
    "generate_series",
    "write_synthetic_dataset",
]
