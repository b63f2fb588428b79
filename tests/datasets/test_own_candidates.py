"""Classification epochs with a fixed share of the pipeline's own candidates (#30, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.catalog import open_catalog
from ct_pipeline.datasets.classification import ClassificationDataset, ClassificationDatasetConfig
from ct_pipeline.errors import BadDataError, BadInputError
from tests.helpers.tiny_luna import SERIES, geometry

# Each tiny series' own candidates (voxel index, row, col): one hit on its nodule at (20, 32, 32),
# three false positives.
OWN_IRC = [((20, 32, 32), 1), ((15, 40, 20), 0), ((25, 10, 50), 0), ((8, 50, 30), 0)]
SAME_COLUMNS = ["series_uid", "center_x_mm", "center_y_mm", "center_z_mm", "is_nodule"]

# Today's epoch lists of the tiny catalog (split "all", epoch_size 16, seed 7, epochs 0 and 3),
# computed with the code before own candidates existed (main at b3bdb29): own_share 0 must keep them.
PINNED = {
    1.0: [[9, 0, 4, 7, 1, 3, 5, 3, 6, 7, 2, 0, 8, 0, 6, 3], [6, 0, 4, 3, 8, 7, 1, 7, 9, 0, 5, 3, 2, 3, 2, 0]],
    2.5: [[6, 9, 8, 0, 1, 2, 7, 5, 4, 6, 3, 4, 1, 3, 5, 9], [5, 8, 6, 0, 4, 2, 3, 1, 9, 2, 7, 8, 4, 7, 1, 9]],
    0.0: [[8, 0, 7, 1, 3, 6, 2, 4, 5, 9, 4, 2, 8, 3, 9, 1], [3, 5, 4, 7, 8, 0, 9, 2, 1, 6, 8, 5, 2, 1, 6, 7]],
}


def _write_own(path, series=SERIES):
    lines = ["seriesuid,coordX,coordY,coordZ,class"]
    for uid in series:
        geo = geometry(SERIES.index(uid))
        for irc, label in OWN_IRC:
            x, y, z = geo.irc_to_xyz(irc)
            lines.append(f"{uid},{x},{y},{z},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def own(tiny, tmp_path):
    """(catalog with the own candidates, the same catalog without, cache)."""
    root, plain, cache = tiny
    catalog = open_catalog([root], tmp_path / "cache", own_candidates=[_write_own(tmp_path / "own.csv")])
    return catalog, plain, cache


def _config(**fields):
    return ClassificationDatasetConfig(**({"split": "all", "epoch_size": 96, "seed": 7} | fields))


@pytest.mark.parametrize("ratio", sorted(PINNED))
def test_own_share_zero_draws_todays_epochs_exactly(tiny, ratio):
    _, catalog, cache = tiny
    dataset = ClassificationDataset(catalog, cache, _config(negatives_per_positive=ratio, epoch_size=16))
    drawn = []
    for epoch in (0, 3):
        dataset.set_epoch(epoch)
        drawn.append(dataset.rows.tolist())
    assert drawn == PINNED[ratio]


def test_own_rows_leak_into_no_ordinary_pool_nor_validation(own):
    catalog, plain, cache = own
    assert int(catalog.candidates["is_own"].sum()) == len(SERIES) * len(OWN_IRC)
    for config in (_config(epoch_size=16), _config(negatives_per_positive=0.0), _config(split="val", val_stride=2)):
        with_own = ClassificationDataset(catalog, cache, config)
        without = ClassificationDataset(plain, cache, config)
        # the same candidates, in the same order, as if the own file had not been given
        assert not catalog.candidates.loc[with_own.rows, "is_own"].any()
        mine = catalog.candidates.loc[with_own.rows, SAME_COLUMNS].reset_index(drop=True)
        assert mine.equals(plain.candidates.loc[without.rows, SAME_COLUMNS].reset_index(drop=True))


@pytest.mark.parametrize("share, positive_share, batch", [(0.25, 0.5, 16), (0.5, 0.5, 8), (1 / 3, 0.25, 12)])
def test_every_batch_holds_the_own_share_and_its_positives(own, share, positive_share, batch):
    catalog, _, cache = own
    dataset = ClassificationDataset(
        catalog, cache, _config(own_share=share, own_positive_share=positive_share, epoch_size=240)
    )
    table = catalog.candidates
    is_own = table.loc[dataset.rows, "is_own"].to_numpy()
    assert is_own.sum() == round(share * 240)
    for start in range(len(is_own) - batch + 1):  # every batch-sized window, wherever batches start
        assert abs(is_own[start : start + batch].sum() - share * batch) <= 1.0
    own_labels = dataset.labels[is_own]
    assert own_labels.sum() == round(positive_share * len(own_labels))
    window = 8
    for start in range(len(own_labels) - window + 1):
        assert abs(own_labels[start : start + window].sum() - positive_share * window) <= 1.0
    # labels are the file's classes; the rest is still the 1:1 balanced draw over candidates.csv
    assert np.array_equal(dataset.labels, table.loc[dataset.rows, "is_nodule"].to_numpy(dtype=np.int64))
    ordinary = dataset.labels[~is_own]
    assert abs(ordinary.sum() - len(ordinary) / 2) <= 1.0
    # each own candidate of a class is drawn about equally often (cycled shuffles)
    counts = np.bincount(dataset.rows, minlength=len(table))
    for label in (True, False):
        pool = counts[(table["is_own"] & (table["is_nodule"] == label)).to_numpy()]
        assert pool.max() - pool.min() <= 1


def test_own_epochs_are_a_function_of_seed_and_epoch_and_ranks_share_them(own):
    catalog, _, cache = own
    config = _config(own_share=0.25, epoch_size=64)
    first, again = (ClassificationDataset(catalog, cache, config) for _ in range(2))
    assert np.array_equal(first.rows, again.rows)
    first.set_epoch(1)
    assert not np.array_equal(first.rows, again.rows)
    first.set_epoch(0)
    assert np.array_equal(first.rows, again.rows)
    ranks = [
        ClassificationDataset(catalog, cache, _config(own_share=0.25, epoch_size=64, rank=r, world_size=2))
        for r in range(2)
    ]
    assert np.array_equal(np.concatenate([r.rows for r in ranks]), first.rows)
    for rank in ranks:
        assert catalog.candidates.loc[rank.rows, "is_own"].sum() == 8  # a quarter of its 32 items


def test_an_own_share_without_own_rows_or_positives_is_a_clear_error(tiny, tmp_path):
    root, plain, cache = tiny
    with pytest.raises(BadDataError, match=r"none of the pipeline's own candidates; mine them"):
        ClassificationDataset(plain, cache, _config(own_share=0.25))
    negatives_only = tmp_path / "neg.csv"
    negatives_only.write_text("\n".join(_write_own(tmp_path / "o.csv").read_text().splitlines()[2:4]) + "\n")
    negatives_only.write_text("seriesuid,coordX,coordY,coordZ,class\n" + negatives_only.read_text())
    catalog = open_catalog([root], tmp_path / "cache", own_candidates=[negatives_only])
    with pytest.raises(BadDataError, match=r"hold no positives \(class 1\)"):
        ClassificationDataset(catalog, cache, _config(own_share=0.25))
    only_negatives = ClassificationDataset(catalog, cache, _config(own_share=0.25, own_positive_share=0.0))
    assert catalog.candidates.loc[only_negatives.rows, "is_own"].sum() == 24


@pytest.mark.parametrize("field", ["own_share", "own_positive_share"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_shares_outside_zero_to_one_are_refused(field, value):
    with pytest.raises(BadInputError, match=rf"^{field} {value}: expected a fraction from 0 to 1$"):
        ClassificationDatasetConfig(**{field: value})
