"""Diagnosis: a CT in, findings out -- segment -> candidates -> classify -> merge.

Read in this order:

1. ``config``      -- ``DiagnosisConfig`` (what is computed) and ``InferenceOptions`` (how networks run).
2. ``result``      -- ``Finding`` and ``DiagnosisResult`` (no torch; what reports and files use).
3. ``networks``    -- finding, loading and preparing the three checkpoints.
4. ``lungs``       -- an HU-threshold lung region, so the U-Net skips what is not lung.
5. ``fast_unet``   -- the book's U-Net with its BatchNorms folded away (same outputs, faster).
6. ``segment``     -- the U-Net over the slices, as the book feeds it, thresholded.
7. ``candidates``  -- erosion, 3D components, centres and diameters; merging duplicates.
8. ``classify``    -- the book's crops and batched classification.
9. ``pipeline``    -- ``diagnose(volume, models, config)``, timing each stage.
10. ``batch``      -- many series: selection, sharding, resumable per-series results, failures.

Modules are imported on use; importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
    from ct_pipeline.diagnosis.networks import DiagnosisModels, load_diagnosis_models
    from ct_pipeline.diagnosis.pipeline import diagnose
    from ct_pipeline.diagnosis.result import DiagnosisResult, Finding

_EXPORTS = {
    "DiagnosisConfig": "config",
    "InferenceOptions": "config",
    "DiagnosisModels": "networks",
    "load_diagnosis_models": "networks",
    "find_newest_checkpoint": "networks",
    "diagnose": "pipeline",
    "DiagnosisResult": "result",
    "Finding": "result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ct_pipeline.diagnosis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ct_pipeline.diagnosis' has no attribute {name!r}")
