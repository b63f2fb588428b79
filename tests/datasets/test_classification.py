"""Classification dataset: exact crops, padding, balanced epochs, ranks, val, malignancy, mm crops, workers."""

import pickle

import numpy as np
import pytest
import torch

from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import open_catalog
from ct_pipeline.datasets.classification import ClassificationDataset, ClassificationDatasetConfig, collate_crops
from ct_pipeline.errors import BadDataError, BadInputError
from tests.helpers.tiny_luna import SERIES, coded_volume, geometry, write_tiny_luna


def _config(**fields):
    return ClassificationDatasetConfig(**({"split": "all", "epoch_size": 40} | fields))


def _expected_crop(series_index, center_irc, size=(32, 48, 48)):
    full = np.pad(coded_volume(series_index), [(s, s) for s in (16, 24, 24)], constant_values=-1000)
    i, r, c = center_irc
    return np.clip(full[i : i + size[0], r : r + size[1], c : c + size[2]], -1000, 1000).astype(np.float32)


def _center_irc(catalog, row):
    candidate = catalog.candidates.loc[row]
    n = SERIES.index(candidate["series_uid"])
    xyz = candidate[["center_x_mm", "center_y_mm", "center_z_mm"]].to_numpy(dtype=float)
    return n, tuple(int(v) for v in geometry(n).xyz_to_irc_rounded(xyz))


def test_items_are_the_clipped_crops_of_the_raw_volume_with_their_labels(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(split="val", val_stride=2))  # series 0 and 2
    assert len(dataset) == len(catalog.candidates[catalog.candidates["series_uid"].isin([SERIES[0], SERIES[2]])])
    for index in range(len(dataset)):
        crop, label, row = dataset[index]
        n, center = _center_irc(catalog, row)
        assert crop.shape == (1, 32, 48, 48) and crop.dtype == torch.float32
        assert np.array_equal(crop[0].numpy(), _expected_crop(n, center)), f"row {row}"
        assert label.dtype == torch.int64 and label.item() == int(catalog.candidates.loc[row, "is_nodule"])
    assert crop.max().item() <= 1000.0, "HU are clipped to hu_range"


def test_a_crop_past_the_volume_faces_is_padded_with_air(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(negatives_per_positive=0.0, epoch_size=0))
    rows = dataset.rows.tolist()
    # the candidate at voxel (2, 3, 60) sticks out of the index-low, row-low and col-high faces
    index = next(i for i, row in enumerate(rows) if _center_irc(catalog, row)[1] == (2, 3, 60))
    crop = dataset[index][0][0].numpy()
    assert (crop[:14] == -1000).all(), "the 14 slices before slice 0 are air"
    assert (crop[:, :21] == -1000).all(), "the 21 rows before row 0 are air"
    assert (crop[:, :, 28:] == -1000).all(), "the columns past col 63 are air"
    n = SERIES.index(catalog.candidates.loc[rows[index], "series_uid"])
    assert crop[16, 24, 24] == coded_volume(n)[2, 3, 60], "padded, not shifted: the candidate stays at the centre"


@pytest.mark.parametrize("ratio, window", [(1.0, 2), (3.0, 4), (0.5, 3), (2.5, 7)])
def test_balanced_epochs_hold_the_ratio_in_every_window(tiny, ratio, window):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(negatives_per_positive=ratio, epoch_size=140))
    labels = dataset.labels
    positives_per_window = window / (1 + ratio)
    assert labels.mean() == pytest.approx(1 / (1 + ratio), abs=1 / len(labels))
    for start in range(0, len(labels) - window + 1):
        assert abs(labels[start : start + window].sum() - positives_per_window) <= 1.0
    # every candidate of a class is drawn about equally often (cycled shuffles)
    counts = np.bincount(dataset.rows, minlength=len(catalog.candidates))
    for is_positive in (True, False):
        of_class = counts[catalog.candidates["is_nodule"].to_numpy() == is_positive]
        assert of_class.max() - of_class.min() <= 1


def test_unbalanced_training_draws_candidates_at_their_natural_rate(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(negatives_per_positive=0.0, epoch_size=100))
    counts = np.bincount(dataset.rows, minlength=len(catalog.candidates))
    assert counts.sum() == 100 and counts.max() - counts.min() <= 1
    one_pass = ClassificationDataset(catalog, cache, _config(negatives_per_positive=0.0, epoch_size=0))
    assert sorted(one_pass.rows.tolist()) == list(range(len(catalog.candidates)))


def test_epochs_are_reproducible_and_differ_from_each_other(tiny):
    _, catalog, cache = tiny
    first = ClassificationDataset(catalog, cache, _config(seed=7))
    again = ClassificationDataset(catalog, cache, _config(seed=7))
    assert np.array_equal(first.rows, again.rows)
    epoch0 = first.rows.copy()
    first.set_epoch(1)
    assert not np.array_equal(first.rows, epoch0)
    first.set_epoch(0)
    assert np.array_equal(first.rows, epoch0)
    assert not np.array_equal(ClassificationDataset(catalog, cache, _config(seed=8)).rows, epoch0)


def test_ranks_get_disjoint_equal_blocks_that_keep_the_balance(tiny):
    _, catalog, cache = tiny
    whole = ClassificationDataset(catalog, cache, _config(epoch_size=42))
    shares = [ClassificationDataset(catalog, cache, _config(epoch_size=42, rank=r, world_size=4)) for r in range(4)]
    assert [len(s) for s in shares] == [10, 10, 10, 10]
    assert np.array_equal(np.concatenate([s.rows for s in shares]), whole.rows[:40])
    for share in shares:
        assert share.labels.sum() == 5


def test_validation_is_every_candidate_of_the_val_series_once_in_order(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, ClassificationDatasetConfig(split="val", val_stride=3))
    expected = catalog.candidates.index[catalog.candidates["series_uid"] == SERIES[0]].tolist()
    assert dataset.rows.tolist() == expected
    assert dataset.labels.tolist() == catalog.candidates.loc[expected, "is_nodule"].astype(int).tolist()
    dataset.set_epoch(5)
    assert dataset.rows.tolist() == expected


def test_malignancy_mode_uses_annotated_nodules_with_a_known_malignancy(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(mode="malignancy", epoch_size=8))
    table = catalog.candidates
    assert set(dataset.rows) <= set(table.index[table["is_nodule"]])
    assert dataset.labels.tolist() == [0, 1] * 4
    for row, label in zip(dataset.rows, dataset.labels):
        assert bool(table.loc[row, "is_malignant"]) == bool(label)
    assert table.loc[dataset.rows[dataset.labels == 1], "series_uid"].unique().tolist() == [SERIES[1]]


def test_malignancy_without_the_malignancy_table_is_a_clear_error(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    (root / "annotations_with_malignancy.csv").unlink()
    catalog = open_catalog([root], tmp_path / "cache")
    with pytest.raises(BadDataError, match="annotations_with_malignancy.csv"):
        ClassificationDataset(catalog, CropCache(tmp_path / "cache"), _config(mode="malignancy"))


def test_a_missing_region_is_filled_on_first_use(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(split="val", val_stride=3))
    key = dataset.regions.key(SERIES[0])
    assert not cache.contains(key)
    crop, _, row = dataset[0]
    assert cache.contains(key)
    assert np.array_equal(crop[0].numpy(), _expected_crop(0, _center_irc(catalog, row)[1]))


def test_batched_fetch_equals_single_items_and_the_dataset_pickles(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(epoch_size=12))
    batch = dataset.__getitems__(list(range(12)))
    clone = pickle.loads(pickle.dumps(dataset))
    for index, (crop, label, row) in enumerate(batch):
        single = clone[index]
        assert torch.equal(crop, single[0]) and label.item() == single[1].item() and row == single[2]


def test_two_workers_give_the_same_batches_as_none(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(epoch_size=24))
    dataset.set_epoch(3)

    def batches(workers, collate):
        loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=workers, collate_fn=collate)
        return [(x.clone(), y.clone(), r.clone()) for x, y, r in loader]

    serial = batches(0, None)
    assert len(serial) == 5 and serial[0][0].shape == (5, 1, 32, 48, 48)
    for other in (batches(2, None), batches(0, collate_crops), batches(2, collate_crops)):
        assert len(other) == 5
        for a, b in zip(serial, other):
            assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_persistent_workers_follow_set_epoch(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(epoch_size=8))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=collate_crops
    )
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        rows = torch.cat([r for _, _, r in loader]).tolist()
        assert rows == dataset.rows.tolist(), f"epoch {epoch}: the workers drew the main process's list"
        seen.append(rows)
    assert seen[0] != seen[1] != seen[2]


def test_collate_crops_hands_the_batch_on_as_the_default_collate_would(tiny):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(epoch_size=6))
    crops, labels, rows = collate_crops(dataset.__getitems__(list(range(6))))
    default = torch.utils.data.default_collate([dataset[i] for i in range(6)])
    assert crops.dtype == torch.float32 and torch.equal(crops, default[0])
    assert torch.equal(labels, default[1]) and torch.equal(rows, default[2])


def test_bad_configs_are_refused():
    with pytest.raises(BadInputError, match="mode"):
        ClassificationDatasetConfig(mode="cancer")
    with pytest.raises(BadInputError, match="negatives_per_positive"):
        ClassificationDatasetConfig(negatives_per_positive=-1)
    with pytest.raises(BadInputError, match="rank"):
        ClassificationDatasetConfig(rank=2, world_size=2)


def test_mm_crops_are_resampled_from_the_cache_as_diagnosis_resamples_the_volume(tiny):
    """Training's crops at a spacing in mm (from a native region sized per series) equal the crops
    diagnosis cuts from the whole volume with the same function, faces included."""
    from ct_pipeline.crops import resampled_crop
    from ct_pipeline.datasets.classification import median_spacing_irc_mm

    _, catalog, cache = tiny
    spacing = (1.5, 1.1, 0.6)  # the series are 2.0 x 0.8 x 0.8 mm
    dataset = ClassificationDataset(
        catalog, cache, _config(negatives_per_positive=0.0, epoch_size=0, crop_spacing_mm=spacing)
    )
    native = ClassificationDataset(catalog, cache, _config(negatives_per_positive=0.0, epoch_size=0))
    assert dataset.regions.key(SERIES[0]) != native.regions.key(SERIES[0])
    assert "-mm1.5x1.1x0.6" in dataset.regions.key(SERIES[0]) and "-mm" not in native.regions.key(SERIES[0])
    for index in range(len(dataset)):
        crop, _, row = dataset[index]
        n = SERIES.index(catalog.candidates.loc[row, "series_uid"])
        xyz = catalog.candidates.loc[row, ["center_x_mm", "center_y_mm", "center_z_mm"]].to_numpy(dtype=float)
        center_irc = geometry(n).xyz_to_irc(xyz[None])[0]
        expected = resampled_crop(coded_volume(n), center_irc, (32, 48, 48), (2.0, 0.8, 0.8), spacing)
        np.testing.assert_array_equal(crop[0].numpy(), np.clip(expected, -1000, 1000), err_msg=f"row {row}")
    assert median_spacing_irc_mm(catalog, SERIES) == (2.0, 0.8, 0.8)


def test_a_bad_crop_spacing_is_refused():
    with pytest.raises(BadInputError, match="crop spacing"):
        ClassificationDatasetConfig(crop_spacing_mm=(1.0, 0.0, 1.0))


def test_the_median_spacing_is_the_median_slice_and_the_median_pixel_spacing(tmp_path):
    """nnU-Net's rule, from headers: slices 1.0, 2.5, 2.0 mm -> 2.0; pixels 0.6, 0.7, 0.9 mm (x and y) -> 0.7."""
    from ct_pipeline.datasets.classification import median_spacing_irc_mm
    from ct_pipeline.geometry import Geometry
    from ct_pipeline.loading.mhd import write_mhd

    (tmp_path / "subset0").mkdir()
    rows = ["seriesuid,coordX,coordY,coordZ,class"]
    uids = [f"1.2.826.0.1.3680043.8.498.{700 + n}" for n in range(3)]
    for uid, (pixel, slices) in zip(uids, ((0.6, 1.0), (0.9, 2.5), (0.7, 2.0))):
        write_mhd(
            np.zeros((4, 8, 8), np.int16),
            Geometry((0, 0, 0), (pixel, pixel, slices), tuple(np.eye(3).ravel())),
            tmp_path / "subset0" / f"{uid}.mhd",
        )
        rows.append(f"{uid},1,1,1,0")
    (tmp_path / "candidates.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    catalog = open_catalog([tmp_path], tmp_path / "cache")
    assert median_spacing_irc_mm(catalog, uids) == (2.0, 0.7, 0.7)
    assert median_spacing_irc_mm(catalog, uids[:2]) == (1.75, 0.75, 0.75)
    with pytest.raises(BadDataError, match="no training series"):
        median_spacing_irc_mm(catalog, [])
