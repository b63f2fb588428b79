"""Segmentation dataset: training crops around nodules, whole validation slices, labels, padding, determinism."""

import numpy as np
import pytest
import torch

from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import open_catalog
from ct_pipeline.datasets.segmentation import SegmentationDataset, SegmentationDatasetConfig
from ct_pipeline.errors import BadDataError, BadInputError
from tests.helpers.tiny_luna import SERIES, SHAPE_IRC, coded_volume, write_tiny_luna

NODULE_IRC = (20, 32, 32)  # every tiny series has its 6 mm nodule here; voxels 0.8 x 0.8 x 2.0 mm


def _window(series_index, slice_index, top_left, size, context=3):
    """The expected image: clipped coded HU, air beyond the volume."""
    pad = 64
    full = np.pad(coded_volume(series_index), pad, constant_values=-1000)
    i, r, c = slice_index - context + pad, top_left[0] + pad, top_left[1] + pad
    return np.clip(full[i : i + 2 * context + 1, r : r + size[0], c : c + size[1]], -1000, 1000).astype(np.float32)


def test_nodule_masks_cover_the_annotated_sphere(tiny):
    _, catalog, cache = tiny
    dataset = SegmentationDataset(catalog, cache, SegmentationDatasetConfig(split="all"))
    mask, centers = dataset.nodule_masks(SERIES[0])
    assert mask.shape == SHAPE_IRC
    assert np.allclose(centers, [NODULE_IRC], atol=1e-6)
    i, r, c = np.indices(SHAPE_IRC)
    sphere = ((i - 20) * 2.0) ** 2 + ((r - 32) * 0.8) ** 2 + ((c - 32) * 0.8) ** 2 <= 3.0**2
    assert np.array_equal(mask, sphere), "the coded volume is dense everywhere near the nodule"
    assert np.flatnonzero(mask.any(axis=(1, 2))).tolist() == [19, 20, 21]


def test_training_items_are_crops_around_a_nodule_with_its_mask(tiny):
    _, catalog, cache = tiny
    dataset = SegmentationDataset(catalog, cache, SegmentationDatasetConfig(split="all", epoch_size=30))
    slices, offsets = set(), set()
    for index in range(len(dataset)):
        image, label, uid, slice_index = dataset[index]
        window_uid, window_slice, top_left, size = dataset.sample_window(index)
        assert (window_uid, window_slice, size) == (uid, slice_index, (64, 64))
        assert image.shape == (7, 64, 64) and label.shape == (1, 64, 64)
        n = SERIES.index(uid)
        assert np.array_equal(image.numpy(), _window(n, slice_index, top_left, size))
        mask, _ = dataset.nodule_masks(uid)
        padded = np.pad(mask, 64)
        expected = padded[slice_index + 64, top_left[0] + 64 : top_left[0] + 128, top_left[1] + 64 : top_left[1] + 128]
        assert np.array_equal(label[0].numpy().astype(bool), expected)
        assert label.sum() > 0, "the slice goes through the nodule"
        offset = (top_left[0] - (32 - 48), top_left[1] - (32 - 48))
        assert 0 <= min(offset) and max(offset) <= 32, "the crop lies inside the 96x96 square around the nodule"
        slices.add(slice_index)
        offsets.add(offset)
    assert slices == {19, 20, 21}
    assert len(offsets) > 20


def test_training_draws_are_reproducible_per_seed_and_epoch(tiny):
    _, catalog, cache = tiny
    config = SegmentationDatasetConfig(split="all", epoch_size=12, seed=4)
    first = SegmentationDataset(catalog, cache, config)
    again = SegmentationDataset(catalog, cache, config)
    windows = [first.sample_window(i) for i in range(12)]
    assert windows == [again.sample_window(i) for i in range(12)]
    first.set_epoch(1)
    assert [first.sample_window(i) for i in range(12)] != windows
    ranks = [
        SegmentationDataset(
            catalog, cache, SegmentationDatasetConfig(split="all", epoch_size=12, seed=4, rank=r, world_size=2)
        )
        for r in range(2)
    ]
    assert [w for rank in ranks for w in (rank.sample_window(i) for i in range(6))] == windows


def test_validation_is_whole_slices_with_every_mask_slice_and_a_sample_of_others(tiny):
    _, catalog, cache = tiny
    dataset = SegmentationDataset(
        catalog, cache, SegmentationDatasetConfig(split="val", val_stride=3, val_other_slice_stride=8)
    )
    # series 0 only; mask slices 19-21, other slices 0, 8, 16, 24, 32
    assert [dataset.sample_window(i)[1] for i in range(len(dataset))] == [0, 8, 16, 19, 20, 21, 24, 32]
    mask, _ = dataset.nodule_masks(SERIES[0])
    for index in range(len(dataset)):
        image, label, uid, slice_index = dataset[index]
        assert uid == SERIES[0] and image.shape == (7, 64, 64)
        assert np.array_equal(image.numpy(), _window(0, slice_index, (0, 0), (64, 64)))
        assert np.array_equal(label[0].numpy().astype(bool), mask[slice_index])
    first_image = dataset[0][0].numpy()
    assert (first_image[:3] == -1000).all(), "context slices before slice 0 are air (padded, not shifted)"
    assert region_is_whole_volume(dataset)
    with pytest.raises(BadInputError, match="not among"):
        dataset.nodule_masks(SERIES[1])


def region_is_whole_volume(dataset):
    region = dataset.regions.region(SERIES[0])
    return region.hu.shape == SHAPE_IRC and region.origin_irc == (0, 0, 0)


def test_fewer_context_slices_give_fewer_channels(tiny):
    _, catalog, cache = tiny
    dataset = SegmentationDataset(
        catalog, cache, SegmentationDatasetConfig(split="all", context_slices=1, epoch_size=2)
    )
    image, _, uid, slice_index = dataset[0]
    assert image.shape == (3, 64, 64)


def test_two_workers_give_the_same_batches_as_none(tiny):
    _, catalog, cache = tiny
    dataset = SegmentationDataset(catalog, cache, SegmentationDatasetConfig(split="all", epoch_size=16))
    dataset.set_epoch(2)

    def batches(workers):
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers)
        return [(x.clone(), y.clone(), list(u), s.clone()) for x, y, u, s in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 4
    for a, b in zip(serial, parallel):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])


def test_a_split_without_nodules_and_bad_configs_are_clear_errors(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    (root / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    (root / "annotations_with_malignancy.csv").unlink()
    catalog = open_catalog([root], tmp_path / "cache")
    with pytest.raises(BadDataError, match="no annotated nodules"):
        SegmentationDataset(catalog, CropCache(tmp_path / "cache"), SegmentationDatasetConfig(split="all"))
    with pytest.raises(BadInputError, match="train_crop"):
        SegmentationDatasetConfig(train_crop=128, train_region=96)


def test_training_reads_the_entries_that_ct_prepcache_fills():
    from ct_pipeline.cache import RegionSpec
    from ct_pipeline.datasets.classification import ClassificationDatasetConfig
    from ct_pipeline.prepcache import PrepcacheConfig

    filled = PrepcacheConfig().spec
    assert SegmentationDatasetConfig().train_spec == filled == RegionSpec()
    assert ClassificationDatasetConfig().region_spec == filled


def test_background_crops_are_centred_on_non_nodule_candidates(tiny):
    _, catalog, cache = tiny
    config = SegmentationDatasetConfig(split="all", epoch_size=40, seed=3, background_share=0.5)
    dataset = SegmentationDataset(catalog, cache, config)
    others = catalog.candidates[
        ~catalog.candidates["is_nodule"] & catalog.candidates["series_uid"].isin(dataset.series_uids)
    ]
    background = np.flatnonzero(dataset._nodule_of_position < 0)
    assert 10 <= len(background) <= 30  # about half of 40
    for index in background[:5]:
        uid, slice_index, top_left, shape = dataset.sample_window(int(index))
        region = dataset.regions.region(uid)
        centre_xyz = others[others["series_uid"] == uid][["center_x_mm", "center_y_mm", "center_z_mm"]].to_numpy()
        centre_irc = np.rint(region.geometry.xyz_to_irc(centre_xyz))
        # the crop holds one of the series' non-nodule candidates, on its slice
        inside = (
            (centre_irc[:, 0] == slice_index)
            & (centre_irc[:, 1] >= top_left[0])
            & (centre_irc[:, 1] < top_left[0] + shape[0])
            & (centre_irc[:, 2] >= top_left[1])
            & (centre_irc[:, 2] < top_left[1] + shape[1])
        )
        assert inside.any()
    # off by default: the book's nodule crops only, and the same draw as before the option existed
    plain = SegmentationDataset(catalog, cache, SegmentationDatasetConfig(split="all", epoch_size=40, seed=3))
    assert (plain._nodule_of_position >= 0).all()
    with pytest.raises(BadInputError, match="--background-share 1.0"):
        SegmentationDatasetConfig(background_share=1.0)
