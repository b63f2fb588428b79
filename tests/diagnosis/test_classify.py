"""Classifier crops: the book's inside the scan, centred and air-padded at its faces as in training, one pass per distinct crop."""

from __future__ import annotations

import numpy as np
import torch

from ct_pipeline.diagnosis.classify import classify_crops, extract_crop

WIDTH = (32, 48, 48)


def _book_crop(hu: np.ndarray, center_irc, width_irc=WIDTH) -> np.ndarray:
    """The book's Ct.getRawCandidate (p2ch14/dsets.py), on an already clipped volume."""
    slices = []
    for axis, center_val in enumerate(center_irc):
        start_ndx = int(round(center_val - width_irc[axis] / 2))
        end_ndx = int(start_ndx + width_irc[axis])
        if start_ndx < 0:
            start_ndx = 0
            end_ndx = int(width_irc[axis])
        if end_ndx > hu.shape[axis]:
            end_ndx = hu.shape[axis]
            start_ndx = int(hu.shape[axis] - width_irc[axis])
        slices.append(slice(start_ndx, end_ndx))
    return hu[tuple(slices)]


def test_inside_the_scan_crops_are_the_books():
    rng = np.random.default_rng(0)
    hu = rng.integers(-2000, 2000, size=(40, 60, 70)).astype(np.int16)
    clipped = hu.clip(-1000, 1000).astype(np.float32)
    for center in np.array([[20, 30, 35], [16, 24, 24], [24, 36, 46], [17, 25, 30]]):
        crop = extract_crop(hu, center, WIDTH, (-1000.0, 1000.0))
        assert crop.dtype == np.float32 and crop.shape == WIDTH
        np.testing.assert_array_equal(crop, _book_crop(clipped, center))


def test_at_the_faces_the_crop_stays_centred_and_is_padded_with_air():
    """Where the book shifted the crop inward, the candidate stays on voxel crop_shape // 2."""
    rng = np.random.default_rng(1)
    hu = rng.integers(-900, 900, size=(40, 60, 70)).astype(np.int16)
    for center in np.array([[0, 0, 0], [39, 59, 69], [5, 58, 1]]):
        crop = extract_crop(hu, center, WIDTH, (-1000.0, 1000.0))
        i, r, c = center
        assert crop[16, 24, 24] == hu[i, r, c]
        assert not np.array_equal(crop, _book_crop(hu.astype(np.float32), center))
        inside = (np.arange(32)[:, None, None] - 16 + i >= 0) & (np.arange(32)[:, None, None] - 16 + i < 40)
        inside = inside & ((np.arange(48)[None, :, None] - 24 + r >= 0) & (np.arange(48)[None, :, None] - 24 + r < 60))
        inside = inside & ((np.arange(48)[None, None, :] - 24 + c >= 0) & (np.arange(48)[None, None, :] - 24 + c < 70))
        assert (crop[~inside] == -1000).all() and (crop[inside] > -1000).all()


def test_training_and_diagnosis_cut_the_same_crop(tmp_path):
    """The crop convention is one: the cache's region crop (training) equals diagnosis' crop."""
    from ct_pipeline.cache import CachedRegion
    from ct_pipeline.geometry import Geometry

    rng = np.random.default_rng(2)
    hu = rng.integers(-900, 900, size=(40, 60, 70)).astype(np.int16)
    region = CachedRegion(
        hu, (0, 0, 0), hu.shape, Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel())), "1.2"
    )
    for center in np.array([[20, 30, 35], [0, 0, 0], [39, 59, 69], [5, 58, 1]]):
        training = region.crop(center, WIDTH).astype(np.float32)
        np.testing.assert_array_equal(training, extract_crop(hu, center, WIDTH, (-1000.0, 1000.0)))
    # a stored sub-region of the volume gives the same crop as the whole volume
    part = CachedRegion(np.ascontiguousarray(hu[4:, 10:, 5:]), (4, 10, 5), hu.shape, region.geometry, "1.2")
    np.testing.assert_array_equal(part.crop([22, 35, 40], WIDTH), region.crop([22, 35, 40], WIDTH))


def test_a_scan_smaller_than_the_crop_is_padded_with_air_around_the_centre():
    hu = np.full((10, 60, 20), 100, dtype=np.int16)
    crop = extract_crop(hu, np.array([5, 30, 10]), WIDTH, (-1000.0, 1000.0))
    assert crop.shape == WIDTH
    assert (crop[11:21, 0:48, 14:34] == 100).all()
    assert (crop[:11] == -1000).all() and (crop[21:] == -1000).all() and (crop[:, :, :14] == -1000).all()


def test_identical_crops_are_classified_once_and_results_keep_their_order():
    hu = np.arange(40 * 50 * 50, dtype=np.int64).reshape(40, 50, 50).astype(np.int16)
    seen = []

    def model(batch: torch.Tensor):
        seen.append(batch.shape[0])
        score = batch.mean(dim=(1, 2, 3, 4)) / 1000.0
        return score, torch.stack([1 - torch.sigmoid(score), torch.sigmoid(score)], dim=1)

    # the first two candidates round to the same voxel
    centres = np.array([[1.2, 1.4, 0.8], [1, 1, 1], [20, 25, 25], [39, 49, 49], [20, 25, 25]])
    probability = classify_crops(hu, centres, model, WIDTH, batch_size=2)
    assert sum(seen) == 3  # 5 candidates, 3 distinct crops
    assert probability[0] == probability[1] and probability[2] == probability[4]
    expected = [
        torch.sigmoid(torch.tensor(extract_crop(hu, np.rint(c), WIDTH, (-1000.0, 1000.0)).mean() / 1000.0)).item()
        for c in centres
    ]
    np.testing.assert_allclose(probability, expected, rtol=1e-6)
    parallel = classify_crops(hu, centres, model, WIDTH, batch_size=1, workers=2)
    np.testing.assert_array_equal(parallel, probability)


def test_no_candidates_no_model_call():
    def model(batch):
        raise AssertionError("must not be called")

    assert classify_crops(np.zeros((40, 50, 50), np.int16), np.zeros((0, 3)), model, WIDTH).shape == (0,)
