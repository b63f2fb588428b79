"""The book-compatible networks and the project's checkpoints.

Read in this order:

1. ``unet``         -- ``SegmentationUNet`` (the book's UNetWrapper): (N, 7, H, W) HU -> (N, 1, H, W) probability.
2. ``classifier``   -- ``LunaClassifier`` (the book's LunaModel): (N, 1, 32, 48, 48) HU -> (logits, probabilities).
3. ``checkpoints``  -- ``save_checkpoint`` / ``load_checkpoint`` / ``build_model``; ``safe_load`` opens files
   with ``weights_only=True`` and explains refusals.
4. ``book``         -- ``import_book_checkpoint``: the book's ``*.state`` files -> project checkpoints.
5. ``inference``    -- ``prepare_for_inference``: eval mode, channels-last, bf16 autocast.
6. ``export``       -- ``export_model``: a checkpoint's network as TorchScript or ONNX, ct's metadata inside.
7. ``exported``     -- ``load_exported``: such a file checked and run like an ``InferenceModel`` (torch.jit, onnxruntime).
"""

from ct_pipeline.models.book import import_book_checkpoint
from ct_pipeline.models.checkpoints import (
    KIND_NAMES,
    Checkpoint,
    build_model,
    count_parameters,
    load_checkpoint,
    new_model,
    save_checkpoint,
)
from ct_pipeline.models.classifier import ClassifierConfig, LunaClassifier
from ct_pipeline.models.inference import InferenceModel, prepare_for_inference
from ct_pipeline.models.unet import SegmentationUNet, UNetConfig

__all__ = [
    "KIND_NAMES",
    "Checkpoint",
    "ClassifierConfig",
    "InferenceModel",
    "LunaClassifier",
    "SegmentationUNet",
    "UNetConfig",
    "build_model",
    "count_parameters",
    "import_book_checkpoint",
    "load_checkpoint",
    "new_model",
    "prepare_for_inference",
    "save_checkpoint",
]
