"""Step 2: the U-Net over the slices, as the book feeds it, into a thresholded mask.

The book's input for slice ``i`` is the HU of slices ``i-3 .. i+3`` (indices clamped to the
volume, so the first and last slices repeat), clipped to -1000..1000; its output is a nodule
probability per pixel, thresholded at 0.5.

With a :class:`~ct_pipeline.diagnosis.lungs.LungRegion`, each batch of consecutive slices runs
on the box around the region only, widened by the U-Net's receptive field (:data:`HALO`) so
that every pixel inside the box gets exactly the value the whole slice would give; box edges
sit on multiples of 4 so the two average-pooling levels see the same 2x2 cells. Inputs are
built per batch from the int16 volume: no float copy of the whole CT is ever made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ct_pipeline.diagnosis.lungs import LungRegion
from ct_pipeline.diagnosis.runtime import ordered_map

# Receptive-field radius of the book's U-Net (depth 3, two 3x3 convolutions per level, two
# 2x average poolings): 23 pixels, rounded up to the pooling alignment.
HALO = 24
ALIGN = 4  # 2 ** (depth - 1)


@dataclass(frozen=True)
class SliceBatch:
    """Consecutive slices run together on one box.

    Attributes:
        indices: slice indices.
        keep: (row0, row1, col0, col1) whose output is kept.
        box: (row0, row1, col0, col1) fed to the network (``keep`` plus the halo, clipped).
    """

    indices: tuple[int, ...]
    keep: tuple[int, int, int, int]
    box: tuple[int, int, int, int]


def _split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into ``parts`` consecutive pieces whose inner edges sit on the pooling grid."""
    edges = [lo] + [lo + (hi - lo) * k // parts // ALIGN * ALIGN for k in range(1, parts)] + [hi]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _grow(lo: int, hi: int, length: int, size: int) -> tuple[int, int]:
    """[lo, hi) grown to ``length`` inside [0, size), its start kept on the pooling grid."""
    start = max(0, min(lo, size - length)) // ALIGN * ALIGN
    return start, min(size, start + length)


def plan_batches(
    shape_irc: tuple[int, int, int],
    region: LungRegion | None,
    batch_size: int,
    halo: int = HALO,
    max_tile_pixels: int | None = None,
    uniform: bool = False,
) -> list[SliceBatch]:
    """Group the slices to segment into batches of up to ``batch_size`` and cut them into boxes, largest first.

    A box wider than ``max_tile_pixels`` (input pixels per slice) is cut into side-by-side
    tiles, each with its own halo: the networks' working memory shrinks with the tile, for a
    little more computation at the seams. Largest first lets later batches reuse the memory
    the allocator kept from earlier ones.
    """
    n_index, n_rows, n_cols = shape_irc
    full = (0, n_rows, 0, n_cols)
    boxes = {i: (full if region is None else region.slice_box(i)) for i in range(n_index)}
    todo = [i for i in range(n_index) if boxes[i] is not None]
    batches = []
    for start in range(0, len(todo), batch_size):
        indices = tuple(todo[start : start + batch_size])
        keeps = [boxes[i] for i in indices]
        row0, row1 = min(b[0] for b in keeps), max(b[1] for b in keeps)  # type: ignore[index]
        col0, col1 = min(b[2] for b in keeps), max(b[3] for b in keeps)  # type: ignore[index]
        rows = (max(0, row0 - halo), min(n_rows, row1 + halo))
        width = min(n_cols, col1 + halo) - max(0, col0 - halo)
        parts = 1 if not max_tile_pixels else max(1, -(-(rows[1] - rows[0]) * width // max_tile_pixels))
        for tile0, tile1 in _split(col0, col1, min(parts, max(1, (col1 - col0) // (4 * ALIGN)))):
            box = (*rows, max(0, tile0 - halo), min(n_cols, tile1 + halo))
            batches.append(SliceBatch(indices, (row0, row1, tile0, tile1), box))  # type: ignore[arg-type]
    if uniform and batches:
        height = max(b.box[1] - b.box[0] for b in batches)
        width = max(b.box[3] - b.box[2] for b in batches)
        batches = [
            SliceBatch(
                b.indices,
                b.keep,
                (*_grow(b.box[0], b.box[1], height, n_rows), *_grow(b.box[2], b.box[3], width, n_cols)),
            )
            for b in batches
        ]
    return sorted(batches, key=lambda b: (-len(b.indices) * (b.box[1] - b.box[0]) * (b.box[3] - b.box[2]), b.indices))


def context_input(
    hu: np.ndarray,
    indices: tuple[int, ...] | list[int],
    box: tuple[int, int, int, int],
    context_slices: int,
    hu_range: tuple[float, float],
    channels_last: bool = False,
) -> torch.Tensor:
    """The book's U-Net input: float32 (len(indices), 2*context+1, rows, cols), HU clipped.

    Rows and columns are padded at the far end up to a multiple of 4 with ``hu_range[0]`` (air)
    when the box ends at an image edge that is not (the book only met 512x512 slices).
    ``channels_last`` lays the tensor out as the network wants it, saving it a copy.
    """
    n_index = hu.shape[0]
    offsets = np.arange(-context_slices, context_slices + 1)
    stack = np.clip(np.asarray(indices)[:, None] + offsets[None, :], 0, n_index - 1)
    row0, row1, col0, col1 = box
    pixels = torch.from_numpy(hu[:, row0:row1, col0:col1][stack])  # (N, C, R, C) in the volume's dtype
    n, c, rows, cols = pixels.shape
    shape = (n, c, rows + -rows % ALIGN, cols + -cols % ALIGN)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batch = torch.empty(shape, dtype=torch.float32, memory_format=memory_format)
    if shape[2:] != (rows, cols):
        batch.fill_(hu_range[0])
    batch[:, :, :rows, :cols] = pixels
    return batch.clamp_(hu_range[0], hu_range[1])


def segment_volume(
    hu: np.ndarray,
    run_model: Callable[[torch.Tensor], torch.Tensor],
    *,
    context_slices: int = 3,
    threshold: float = 0.5,
    hu_range: tuple[float, float] = (-1000.0, 1000.0),
    region: LungRegion | None = None,
    batch_size: int = 8,
    workers: int = 1,
    max_tile_pixels: int | None = None,
    confident_threshold: float | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The thresholded U-Net output, bool (index, row, col); False outside ``region``.

    With ``confident_threshold``, uint8 instead: 0 at or below ``threshold``, 1 above it, 2 also
    above ``confident_threshold`` (one pass of the network gives both).

    Args:
        hu: (index, row, col) HU, int16 (or any real dtype).
        run_model: (N, 2*context+1, H, W) float32 -> (N, 1, H, W) probabilities.
        context_slices: slices on each side of the one segmented (book: 3).
        threshold: probability above which a pixel is set (book: 0.5, strictly above).
        hu_range: clipping of the input.
        region: where to run; None: every pixel of every slice (the book).
        batch_size: slices per batch.
        workers: batches run side by side (threads).
        max_tile_pixels: cut wider boxes into tiles (see :func:`plan_batches`).
        confident_threshold: see above; None: the bool mask alone.
        on_batch: called with (slices done, slices to do) before the first batch and after
            each one (a slice cut into tiles counts once per tile).
    """

    channels_last = bool(getattr(run_model, "channels_last", False))

    def run(batch: SliceBatch) -> tuple[SliceBatch, np.ndarray]:
        inputs = context_input(hu, batch.indices, batch.box, context_slices, hu_range, channels_last)
        probabilities = run_model(inputs)
        del inputs
        row0, row1, col0, col1 = batch.keep
        r0, c0 = row0 - batch.box[0], col0 - batch.box[2]
        window = probabilities[:, 0, r0 : r0 + row1 - row0, c0 : c0 + col1 - col0]
        kept = (window > threshold).cpu().numpy()
        if region is not None:
            kept &= region.full_mask(list(batch.indices), slice(row0, row1), slice(col0, col1))
        if confident_threshold is not None:
            kept = kept.astype(np.uint8)
            kept += kept & (window > confident_threshold).cpu().numpy()
        return batch, kept

    mask = np.zeros(hu.shape, dtype=bool if confident_threshold is None else np.uint8)
    batches = plan_batches(hu.shape, region, batch_size, max_tile_pixels=max_tile_pixels)
    total, done = sum(len(b.indices) for b in batches), 0
    if on_batch is not None:
        on_batch(0, total)
    for batch, kept in ordered_map(run, batches, workers):  # type: ignore[arg-type]
        row0, row1, col0, col1 = batch.keep
        mask[list(batch.indices), row0:row1, col0:col1] = kept
        done += len(batch.indices)
        if on_batch is not None:
            on_batch(done, total)
    return mask


def region_pixel_fraction(
    shape_irc: tuple[int, int, int], region: LungRegion | None, batch_size: int, max_tile_pixels: int | None = None
) -> float:
    """Fraction of the volume's pixels the U-Net is run on (halos included)."""
    total = float(np.prod(shape_irc))
    if total == 0:
        return 0.0
    work = sum(
        len(b.indices) * (b.box[1] - b.box[0]) * (b.box[3] - b.box[2])
        for b in plan_batches(shape_irc, region, batch_size, max_tile_pixels=max_tile_pixels)
    )
    return work / total
