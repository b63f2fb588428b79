"""Diagnosis: a CT in, findings out -- segment -> candidates -> classify -> merge.

Read in this order:

1. ``config``      -- ``DiagnosisConfig`` (what is computed) and ``InferenceOptions`` (how networks run).
2. ``result``      -- ``Finding`` and ``DiagnosisResult`` (no torch; what reports and files use).
3. ``networks``    -- finding, loading and preparing the three checkpoints.
4. ``lungs``       -- an HU-threshold lung region, so the U-Net skips what is not lung.
5. ``fast_unet``   -- the book's U-Net with its BatchNorms folded away (same outputs, faster).
6. ``segment``     -- the U-Net over the slices, as the book feeds it, thresholded.
7. ``candidates``  -- erosion, 3D components, centres and diameters; merging duplicates.
8. ``classify``    -- the classifiers' crops (``ct_pipeline.crops``) and batched classification.
9. ``pipeline``    -- ``diagnose(volume, models, config)``, timing each stage.
10. ``result_files`` -- JSON Lines, per-series result files, the LUNA16 CSV, ``ct merge``.
11. ``provenance`` -- which models and settings a result came from.
12. ``batch``      -- many series: selection, sharding, resumable per-series results, failures.
13. ``hard_negatives`` -- stages 1-3 on training series: the U-Net's false positives for the classifier.

Import from the modules themselves; importing this package loads nothing.
"""
