"""PyTorch datasets over the crop cache, and the batched augmentation the training loop applies.

Read in this order:

1. ``regions``        -- cached regions per series, filled on first use; crops into float buffers.
2. ``classification`` -- ``ClassificationDataset``: balanced 3D candidate crops (nodule or malignancy).
3. ``masks``          -- nodule masks from annotations: dense voxels of the sphere connected to the centre.
4. ``segmentation``   -- ``SegmentationDataset``: 7-channel slices; random crops around nodules, whole val slices.
5. ``augmentation``   -- ``augment_batch``: mirror, shift, scale, rotation, noise on the training device.
"""

from ct_pipeline.datasets.augmentation import AugmentationConfig, SampleTransforms, apply_transforms, augment_batch, sample_transforms
from ct_pipeline.datasets.classification import ClassificationDataset, ClassificationDatasetConfig, CropBatch, collate_crops
from ct_pipeline.datasets.masks import NoduleMask, book_box_mask, nodule_mask, nodule_mask_box
from ct_pipeline.datasets.segmentation import WHOLE_VOLUME_SPEC, SegmentationDataset, SegmentationDatasetConfig

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
