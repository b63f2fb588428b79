"""Step 5: classifier crops around candidates, as the book cuts them, and batched classification.

The book's ``getRawCandidate`` centres a 32x48x48 crop on the candidate's rounded voxel
(``start = round(center - width / 2)``) and, near the volume's edge, shifts it inward so it
stays inside. A scan smaller than the crop along an axis (which the book cannot handle) is
padded with air (the low end of the HU range) around the centred crop.

Candidates whose crops coincide (same start after the shift, common at the edges) are
classified once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ct_pipeline.diagnosis.runtime import ordered_map


def crop_starts(
    center_irc: np.ndarray, shape_irc: tuple[int, int, int], crop_shape_irc: tuple[int, int, int]
) -> np.ndarray:
    """(N, 3) int64 start voxel of each crop (may be negative only where the scan is smaller than the crop)."""
    center = np.asarray(center_irc, dtype=np.float64).reshape(-1, 3)
    width = np.asarray(crop_shape_irc, dtype=np.int64)
    shape = np.asarray(shape_irc, dtype=np.int64)
    # The book: int(round(center_val - width/2)) with Python's round (half to even), like np.rint.
    start = np.rint(center - width / 2.0).astype(np.int64)
    fits = shape >= width
    shifted = np.clip(start, 0, np.maximum(shape - width, 0))
    return np.where(fits[None, :], shifted, start)


def extract_crop(
    hu: np.ndarray, start_irc: np.ndarray, crop_shape_irc: tuple[int, int, int], hu_range: tuple[float, float]
) -> np.ndarray:
    """float32 crop (crop_shape) of ``hu`` from ``start_irc``, clipped to ``hu_range``, air outside the scan."""
    crop = np.full(crop_shape_irc, hu_range[0], dtype=np.float32)
    source, target = [], []
    for start, width, size in zip(start_irc, crop_shape_irc, hu.shape):
        lo, hi = max(0, int(start)), min(size, int(start) + width)
        source.append(slice(lo, hi))
        target.append(slice(lo - int(start), hi - int(start)))
    crop[tuple(target)] = hu[tuple(source)]
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
) -> np.ndarray:
    """Positive-class probability (column 1 of the softmax) of the crop around each centre.

    Args:
        hu: (index, row, col) HU.
        center_irc: (N, 3) crop centres, voxel indices (rounded by the caller as the book does).
        run_model: (B, 1, I, R, C) float32 -> (logits, probabilities), each (B, 2).
        crop_shape_irc: the classifier's input size.
        hu_range: input clipping.
        batch_size: crops per forward pass.
        workers: batches run side by side (threads).

    Returns:
        (N,) float64 probabilities.
    """
    n = len(center_irc)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    starts = crop_starts(center_irc, hu.shape, crop_shape_irc)  # type: ignore[arg-type]
    unique_starts, back = np.unique(starts, axis=0, return_inverse=True)

    def run(chunk: np.ndarray) -> np.ndarray:
        batch = np.stack([extract_crop(hu, start, crop_shape_irc, hu_range) for start in chunk])[:, None]
        _, probabilities = run_model(torch.from_numpy(batch))
        return probabilities[:, 1].double().cpu().numpy()

    chunks = [unique_starts[first : first + batch_size] for first in range(0, len(unique_starts), batch_size)]
    probability = np.concatenate(list(ordered_map(run, chunks, workers)))
    return probability[back.reshape(-1)]
