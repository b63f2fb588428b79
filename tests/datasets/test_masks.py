"""Nodule masks: the annotated sphere's dense voxels connected to the centre, against the book's box."""

import numpy as np
import pytest

from ct_pipeline.datasets.masks import NoduleMask, book_box_mask, nodule_mask, nodule_mask_box

SPACING_XYZ = (0.7, 0.7, 1.4)  # x, y, z mm: voxels are twice as long along the index axis
SHAPE = (40, 80, 80)
CENTER = (20, 40, 40)
DIAMETER_MM = 12.0


def _sphere(radius_mm=DIAMETER_MM / 2, center=CENTER):
    i, r, c = np.indices(SHAPE)
    return ((i - center[0]) * 1.4) ** 2 + ((r - center[1]) * 0.7) ** 2 + ((c - center[2]) * 0.7) ** 2 <= radius_mm**2


def _lung_with_nodule_vessel_and_blob():
    hu = np.full(SHAPE, -900, dtype=np.int16)
    hu[_sphere()] = 60
    hu[19:22, 10:70, 39:42] = 40  # a vessel along the row axis, through the nodule
    hu[16:18, 14:17, 46:49] = 30  # a dense speck near the nodule that does not touch it
    return hu


def test_mask_is_the_sphere_not_the_vessel_or_the_speck():
    hu = _lung_with_nodule_vessel_and_blob()
    ours = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ, threshold_hu=-700)
    assert np.array_equal(ours, _sphere()), "exactly the annotated sphere (its dense voxels, all connected)"


def test_the_books_box_runs_along_the_vessel_and_keeps_the_speck():
    hu = _lung_with_nodule_vessel_and_blob()
    book = book_box_mask(hu, CENTER, threshold_hu=-700)
    vessel_outside = np.zeros(SHAPE, bool)
    vessel_outside[19:22, 10:70, 39:42] = True
    vessel_outside &= ~_sphere()
    assert book[vessel_outside].mean() > 0.9, "the box grew along the vessel to its ends"
    assert book[16:18, 14:17, 46:49].all(), "dense voxels in the box count even when they do not touch the nodule"
    speck = np.zeros(SHAPE, bool)
    speck[16:18, 14:17, 46:49] = True
    assert np.array_equal(book, _sphere() | vessel_outside | speck), "the box's dense voxels: all three"
    ours = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ)
    assert not ours[vessel_outside].any() and not ours[16:18, 14:17, 46:49].any()


def test_anisotropic_spacing_bounds_each_axis_in_millimetres():
    hu = np.full(SHAPE, 100, dtype=np.int16)  # all dense: the sphere alone bounds the mask
    mask = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ)
    index, rows, cols = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    assert (index.min(), index.max()) == (20 - 4, 20 + 4)  # 6 mm / 1.4 mm = 4.3 slices
    assert (rows.min(), rows.max()) == (40 - 8, 40 + 8)  # 6 mm / 0.7 mm = 8.6 rows
    assert (cols.min(), cols.max()) == (40 - 8, 40 + 8)


def test_dense_tissue_not_connected_to_the_centre_is_left_out():
    hu = np.full(SHAPE, -900, dtype=np.int16)
    small = _sphere(radius_mm=3.0)
    hu[small] = 50
    hu[20, 40, 46:50] = 50  # inside the annotated sphere, separated from the nodule by lung
    mask = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ)
    assert np.array_equal(mask, small)


def test_a_cavitated_nodule_is_found_around_its_empty_centre():
    hu = np.full(SHAPE, -900, dtype=np.int16)
    shell = _sphere(radius_mm=5.0) & ~_sphere(radius_mm=2.5)
    hu[shell] = 40
    mask = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ)
    assert np.array_equal(mask, shell)


def test_a_nodule_fainter_than_the_threshold_falls_back_to_the_sphere():
    hu = np.full(SHAPE, -900, dtype=np.int16)
    hu[_sphere()] = -750  # ground glass below -700
    mask = nodule_mask(hu, CENTER, DIAMETER_MM, SPACING_XYZ, threshold_hu=-700)
    assert np.array_equal(mask, _sphere())


def test_box_masks_paint_at_their_place_and_clip_at_the_edges():
    hu = np.full(SHAPE, 100, dtype=np.int16)
    corner = nodule_mask_box(hu, (1, 2, 78), DIAMETER_MM, SPACING_XYZ)
    assert corner.start_irc[0] == 0 and corner.start_irc[1] == 0 and corner.stop_irc[2] == 80
    full = np.zeros(SHAPE, bool)
    corner.paint(full)
    window = np.zeros((3, 10, 10), bool)
    corner.paint(window, out_start_irc=(0, 0, 70))
    assert np.array_equal(window, full[0:3, 0:10, 70:80])
    outside = NoduleMask((100, 100, 100), np.ones((2, 2, 2), bool), (101.0, 101.0, 101.0))
    outside.paint(full)  # no overlap: nothing happens
    assert full.sum() == corner.mask.sum()


@pytest.mark.parametrize("diameter_mm", [0.0, 3.0])
def test_tiny_or_missing_diameters_still_mark_the_centre(diameter_mm):
    hu = np.full(SHAPE, 100, dtype=np.int16)
    mask = nodule_mask(hu, CENTER, diameter_mm, SPACING_XYZ)
    assert mask[CENTER]
    assert mask.sum() >= 1
