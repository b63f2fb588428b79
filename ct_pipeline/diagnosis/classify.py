"""Step 5: classifier crops around candidates and batched classification.

Crops follow :mod:`ct_pipeline.crops`, the convention training uses: centred on the candidate's
rounded voxel, air beyond the scan's faces (the book shifted them inward there); or, for a
classifier trained at a spacing in mm, resampled to it around the candidate's exact voxel.
Candidates with the same crop centre are classified once.

Test-time flips (``flips`` > 1) average the probability over mirrored copies of each crop. The
classifiers were trained with every axis mirrored at random and rotated by any angle in-plane,
so a mirrored crop is as familiar to them as the crop itself, and the mean over copies averages
away some of the orientation-dependent noise of one forward pass. In-plane mirrors come first:
training already rotates in-plane by any angle, while the index axis is the crop's short one
and the scan's coarse one (slices of 1-2.5 mm), whose mirror changes what lies above and below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ct_pipeline.crops import resampled_crop
from ct_pipeline.diagnosis.config import CLASSIFIER_FLIPS
from ct_pipeline.diagnosis.runtime import ordered_map
from ct_pipeline.errors import BadInputError

# The mirrored copies, as the dims of a (B, 1, I, R, C) batch that torch.flip reverses; the first
# k of them for k = 1, 2, 4, 8 are each a group (a mirror of a copy is a copy of the set).
FLIPS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (3, 4), (2,), (2, 4), (2, 3), (2, 3, 4))


def with_flips(batch: torch.Tensor, flips: int) -> torch.Tensor:
    """(flips * B, 1, I, R, C): ``batch`` (B, 1, I, R, C) and its first ``flips - 1`` mirrors
    of :data:`FLIPS`, copy-major (rows ``k * B .. (k + 1) * B`` are mirror ``k``)."""
    if flips not in CLASSIFIER_FLIPS:
        raise BadInputError(f"{flips} test-time flips: expected one of {', '.join(map(str, CLASSIFIER_FLIPS))}")
    if flips == 1:
        return batch
    return torch.cat([batch.flip(dims) if dims else batch for dims in FLIPS[:flips]])


@dataclass(frozen=True)
class CropSpacing:
    """The grids of a diagnosis' crops.

    Attributes:
        native_irc_mm: the volume's voxel spacing (z, y, x) in mm (its geometry's ``spacing_xyz`` reversed).
        crop_mm: the classifier's crop spacing (z, y, x) in mm; None: native voxels.
    """

    native_irc_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_mm: tuple[float, float, float] | None = None


def extract_crop(
    hu: np.ndarray,
    center_irc: np.ndarray,
    crop_shape_irc: tuple[int, int, int],
    hu_range: tuple[float, float],
    spacing: CropSpacing = CropSpacing(),
) -> np.ndarray:
    """float32 crop (crop_shape) around ``center_irc``, clipped to ``hu_range``, air outside the scan.

    Native (``spacing.crop_mm`` None): around the rounded voxel, as the book's. Resampled: by
    :func:`~ct_pipeline.crops.resampled_crop`, the function training cuts its crops with.
    """
    crop = resampled_crop(
        hu, center_irc, crop_shape_irc, spacing.native_irc_mm, spacing.crop_mm, pad_hu=hu_range[0]
    ).astype(np.float32, copy=False)
    np.clip(crop, hu_range[0], hu_range[1], out=crop)
    return crop


def classify_crops(
    hu: np.ndarray,
    center_irc: np.ndarray,
    run_model: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    crop_shape_irc: tuple[int, int, int],
    *,
    hu_range: tuple[float, float] = (-1000.0, 1000.0),
    batch_size: int = 32,
    workers: int = 1,
    flips: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
    spacing: CropSpacing = CropSpacing(),
) -> np.ndarray:
    """Positive-class probability (column 1 of the softmax) of the crop around each centre.

    Args:
        hu: (index, row, col) HU.
        center_irc: (N, 3) crop centres, voxel indices: rounded (the book's) for native crops;
            resampled crops are centred on them as given.
        run_model: (B, 1, I, R, C) float32 -> (logits, probabilities), each (B, 2).
        crop_shape_irc: the classifier's input size.
        hu_range: input clipping.
        batch_size: crops per forward pass (before the flips).
        workers: batches run side by side (threads).
        flips: test-time mirrored copies per crop (1, 2, 4 or 8, see :data:`FLIPS`); the
            probability is their mean, and a batch's copies go through ``run_model`` in one
            forward pass of ``flips * batch_size`` crops.
        on_batch: called with (crops done, crops to do) before the first batch and after each
            one (candidates sharing a centre are one crop).
        spacing: the volume's spacing and the crops' (the classifier's model config).

    Returns:
        (N,) float64 probabilities.
    """
    n = len(center_irc)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    centers = np.asarray(center_irc, dtype=np.float64).reshape(-1, 3)
    if spacing.crop_mm is None:
        centers = np.rint(centers).astype(np.int64)
    unique_centers, back = np.unique(centers, axis=0, return_inverse=True)

    def run(chunk: np.ndarray) -> np.ndarray:
        batch = np.stack([extract_crop(hu, center, crop_shape_irc, hu_range, spacing) for center in chunk])[:, None]
        _, probabilities = run_model(with_flips(torch.from_numpy(batch), flips))
        positive = probabilities[:, 1].double().cpu().numpy()
        return positive.reshape(flips, len(chunk)).mean(axis=0)

    chunks = [unique_centers[first : first + batch_size] for first in range(0, len(unique_centers), batch_size)]
    results, done = [], 0
    if on_batch is not None:
        on_batch(0, len(unique_centers))
    for probabilities in ordered_map(run, chunks, workers):
        results.append(probabilities)
        done += len(probabilities)
        if on_batch is not None:
            on_batch(done, len(unique_centers))
    return np.concatenate(results)[back.reshape(-1)]
