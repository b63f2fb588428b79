"""PyTorch datasets over the crop cache, and the batched augmentation the training loop applies.

Read in this order:

1. ``regions``        -- cached regions per series, filled on first use; crops into float buffers.
2. ``classification`` -- ``ClassificationDataset``: balanced 3D candidate crops (nodule or malignancy).
3. ``masks``          -- nodule masks from annotations: dense voxels of the sphere connected to the centre.
4. ``segmentation``   -- ``SegmentationDataset``: 7-channel slices; random crops around nodules, whole val slices.
5. ``augmentation``   -- ``augment_batch``: mirror, shift, scale, rotation, noise on the training device.
6. ``intensity``      -- what augment_batch changes per sample like another scanner: HU calibration, kernel, noise level.
"""

from importlib import import_module

# Names -> the module that defines them, imported on first use: the training configuration (and
# so the CLI's help) reads AugmentationConfig without loading torch with the datasets.
_HOMES = {
    "AugmentationConfig": "augmentation_config",
    **dict.fromkeys(("SampleTransforms", "apply_transforms", "augment_batch", "sample_transforms"), "augmentation"),
    **dict.fromkeys(
        ("ClassificationDataset", "ClassificationDatasetConfig", "CropBatch", "collate_crops"), "classification"
    ),
    **dict.fromkeys(("NoduleMask", "book_box_mask", "nodule_mask", "nodule_mask_box"), "masks"),
    **dict.fromkeys(("WHOLE_VOLUME_SPEC", "SegmentationDataset", "SegmentationDatasetConfig"), "segmentation"),
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "WHOLE_VOLUME_SPEC",
    "AugmentationConfig",
    "ClassificationDataset",
    "ClassificationDatasetConfig",
    "CropBatch",
    "NoduleMask",
    "SampleTransforms",
    "SegmentationDataset",
    "SegmentationDatasetConfig",
    "apply_transforms",
    "augment_batch",
    "book_box_mask",
    "collate_crops",
    "nodule_mask",
    "nodule_mask_box",
    "sample_transforms",
]
