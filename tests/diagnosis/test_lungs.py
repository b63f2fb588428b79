"""The HU-threshold lung region: covers the lungs and their wall, leaves out the air around the patient."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ct_pipeline.diagnosis.lungs import COARSE, find_lung_region
from tests.helpers.diagnosis_tiny import SPACING_XYZ, phantom_chest

SPACING_IRC = SPACING_XYZ[::-1]


def _full(region, shape):
    return region.full_mask(slice(None), slice(0, shape[1]), slice(0, shape[2]))


def test_region_holds_the_lungs_and_a_margin_but_not_the_outside_air():
    hu = phantom_chest()
    region = find_lung_region(hu, SPACING_IRC, margin_mm=5.0)
    assert region is not None
    full = _full(region, hu.shape)
    lungs = hu == -850
    outside = hu == -1000
    assert full[lungs].all()
    # every voxel within 5 mm of the lungs is in (distance measured on the fine grid)
    distance = ndimage.distance_transform_edt(~lungs, sampling=SPACING_IRC)
    assert full[distance <= 5.0].all()
    assert outside[distance > 12.0].sum() > 1000 and not full[outside & (distance > 12.0)].any()
    # ... and the region stays near them: nothing further than margin + a coarse cell diagonal
    assert distance[full].max() <= 5.0 + 2 * COARSE * SPACING_IRC[1] + SPACING_IRC[0]
    lung_ml = lungs.sum() * np.prod(SPACING_IRC) / 1000
    assert abs(region.lung_volume_ml - lung_ml) / lung_ml < 0.35  # 4x4-cell means blur the edge


def test_bigger_margin_grows_the_region():
    hu = phantom_chest()
    small = find_lung_region(hu, SPACING_IRC, margin_mm=2.0)
    large = find_lung_region(hu, SPACING_IRC, margin_mm=10.0)
    assert small.fraction < large.fraction
    assert (_full(small, hu.shape) <= _full(large, hu.shape)).all()


def test_no_enclosed_air_means_no_region():
    solid = np.full((6, 32, 32), 40, dtype=np.int16)
    assert find_lung_region(solid, (2.0, 1.0, 1.0)) is None
    open_air = np.full((6, 32, 32), -1000, dtype=np.int16)  # all air touches the border
    assert find_lung_region(open_air, (2.0, 1.0, 1.0)) is None


def test_slice_boxes_sit_on_the_pooling_grid_and_odd_sizes_are_handled():
    hu = phantom_chest(shape_irc=(12, 62, 58))
    region = find_lung_region(hu, SPACING_IRC, margin_mm=3.0)
    boxes = [region.slice_box(i) for i in range(12)]
    assert any(b is not None for b in boxes)
    for box in filter(None, boxes):
        assert box[0] % 4 == 0 and box[2] % 4 == 0 and box[1] <= 62 and box[3] <= 58
    assert region.full_mask(slice(None), slice(0, 62), slice(0, 58)).shape == (12, 62, 58)
