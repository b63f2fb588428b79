"""LUNA16-format synthetic chest CTs with known nodules: ``write_synthetic_dataset(config)``.

Reading order: ``streams`` (the named random streams) -> ``layout`` (a series' grid and the
frames: anatomy mm, canonical and stored irc, patient xyz) -> ``config`` (options; each series'
grid and geometry) -> ``phantom`` (body, bones, mediastinum, lungs) -> ``vessels`` -> ``nodules``
-> ``candidates`` -> ``noise`` -> ``series`` (one series drawn in memory) -> ``writer`` (the
files: ``tables`` the CSVs, ``readme`` README.txt, ``dicom`` the DICOM copies, ``manifest``
what --overwrite may delete). ``style`` holds the phantom families, ``followup`` plans each
series' later scan (``--follow-up``), ``drawing`` the shared voxel-drawing helpers. Nothing is
imported eagerly beyond these small modules (no SimpleITK until DICOM is written).
"""

from ct_pipeline.synth.config import SynthConfig
from ct_pipeline.synth.layout import SIZES, SeriesLayout
from ct_pipeline.synth.series import SyntheticSeries, generate_series
from ct_pipeline.synth.writer import SeriesSummary, SynthResult, write_synthetic_dataset

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
