"""Mask quality on synthetic chest CTs, against the nodules as drawn: ours vs the book's box rule.

The synthetic nodules are lobulated, some part-solid, some touching the chest wall, with vessels
around them: closer to what the masks meet in LUNA16 than a clean sphere. The truth is each
drawn nodule's own voxels (the generator's share-of-voxel map >= 1/2, spicules left out).
"""

import numpy as np
import pytest

from ct_pipeline.datasets.masks import book_box_mask, nodule_mask

N_SERIES = 8


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(int(a.sum() + b.sum()), 1)


@pytest.mark.slow
def test_masks_match_the_drawn_nodules_far_better_than_the_books_boxes(tmp_path):
    from ct_pipeline.synth import SynthConfig
    from ct_pipeline.synth.config import direction_kinds, plan_series
    from ct_pipeline.synth.drawing import partial_volume_mm, window
    from ct_pipeline.synth.nodules import _fraction  # the generator's own nodule shape
    from ct_pipeline.synth.series import generate_series

    config = SynthConfig(
        out_dir=tmp_path, n_series=N_SERIES, seed=3, size="small", oblique_fraction=0.0, flip_fraction=0.0
    )
    kinds = direction_kinds(config)
    ours, book = [], []
    for index in range(config.n_series):
        layout = plan_series(config, index, *kinds[index])
        series = generate_series(config, layout)
        edge = partial_volume_mm(layout)
        for nodule, center_xyz in zip(series.nodules, series.nodule_xyz):
            pad = nodule.max_radius_mm + edge
            win = window(layout, np.array(nodule.center_mm) - pad, np.array(nodule.center_mm) + pad)
            truth = np.zeros(layout.shape_irc, dtype=bool)
            truth[win.slices] = _fraction(nodule, win, 1.0, edge) >= 0.5
            truth = layout.to_stored(truth)
            center_irc = layout.geometry.xyz_to_irc(center_xyz)
            ours.append(_dice(nodule_mask(series.hu, tuple(center_irc), nodule.diameter_mm, layout.spacing_xyz), truth))
            book.append(_dice(book_box_mask(series.hu, tuple(np.rint(center_irc).astype(int))), truth))
    assert len(ours) >= 10, "enough nodules to compare"
    # measured with seed 3: ours ~0.96, the book's ~0.55 (16 series: 0.957 vs 0.551)
    assert np.mean(ours) >= 0.9
    assert np.mean(ours) >= np.mean(book) + 0.25
    assert np.median(ours) >= 0.95
