"""The image noise added last to a series, and its storage as int16 HU in the stored orientation."""

from __future__ import annotations

import numpy as np

from ct_pipeline.synth.layout import SeriesLayout

HU_MIN, HU_MAX = -1024, 3071
_CHUNK_VOXELS = 4_000_000
_DIRECT_NOISE_VOXELS = 8_000_000
_TILE_DEPTH = 16
_TILE_PAD = 32


def add_noise(volume: np.ndarray, layout: SeriesLayout, rng: np.random.Generator, noise_sd: float) -> np.ndarray:
    """Canonical float32 HU + noise of SD ``noise_sd``, rounded and clipped -> int16, stored orientation.

    Works slice-chunk by chunk and overwrites ``volume`` as scratch space. Drawing a fresh
    normal number per voxel costs ~20 ns here (1.6 s for a 512 x 512 x 300 volume), so big
    volumes take their noise from two pre-drawn tiles at random offsets per chunk (see
    :func:`_noise_tiles`); small volumes get fresh noise everywhere.
    """
    stored = np.empty(layout.shape_irc, dtype=np.int16)
    canonical_view = layout.to_stored(stored)  # flipping is its own inverse
    n_slices, n_rows, n_cols = layout.shape_irc
    tiles = (
        None if volume.size <= _DIRECT_NOISE_VOXELS else _noise_tiles(rng, (n_rows, n_cols), noise_sd / np.sqrt(2.0))
    )
    chunk = max(1, _CHUNK_VOXELS // (n_rows * n_cols))
    if tiles is not None:
        chunk = min(chunk, _TILE_DEPTH // 2)
    for start in range(0, n_slices, chunk):
        block = volume[start : start + chunk]
        if tiles is None:
            noise = rng.standard_normal(size=block.shape, dtype=np.float32)
            noise *= np.float32(noise_sd)
            block += noise
        else:
            for tile in tiles:
                depth, pad = len(block), tile.shape[1] - n_rows
                z0, r0, c0 = (int(v) for v in rng.integers(0, (_TILE_DEPTH - depth + 1, pad + 1, pad + 1)))
                block += tile[z0 : z0 + depth, r0 : r0 + n_rows, c0 : c0 + n_cols]
        np.rint(block, out=block)
        np.clip(block, HU_MIN, HU_MAX, out=block)
        canonical_view[start : start + chunk] = block
    return stored


def _noise_tiles(rng: np.random.Generator, shape_rc: tuple[int, int], sd: float) -> list[np.ndarray]:
    """Two blocks of noise with SD ``sd``, (_TILE_DEPTH, rows + pad, cols + pad) float32.

    Their sum at independent random offsets does not visibly repeat. A [1, 2, 1]/4 blur along
    rows and columns gives the noise CT's fine grain (correlated over about a pixel).
    """
    rows, cols = shape_rc[0] + _TILE_PAD, shape_rc[1] + _TILE_PAD
    tiles = []
    for _ in range(2):
        raw = rng.standard_normal(size=(_TILE_DEPTH, rows + 2, cols + 2), dtype=np.float32)
        smooth = raw[:, :, :-2] + 2 * raw[:, :, 1:-1] + raw[:, :, 2:]
        smooth = smooth[:, :-2] + 2 * smooth[:, 1:-1] + smooth[:, 2:]
        smooth *= np.float32(sd / 6.0)  # the 2-D weights' norm is 6 (per axis: [1, 2, 1] has norm sqrt(6))
        tiles.append(smooth)
    return tiles
