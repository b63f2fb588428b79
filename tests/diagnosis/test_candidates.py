"""Grouping the mask into candidates as the book does, and merging duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ct_pipeline.diagnosis.candidates import _label, group_candidates, merge_duplicates, merge_groups
from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.errors import BadInputError
from ct_pipeline.geometry import Geometry

GEOMETRY = Geometry((10.0, -20.0, -300.0), (0.5, 0.5, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
OBLIQUE = Geometry((10.0, -20.0, -300.0), (0.5, 0.6, 2.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))


def _book_centres(mask: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """The book's groupSegmentationOutput, verbatim in scipy calls."""
    eroded = ndimage.binary_erosion(mask, iterations=1)
    labels, count = ndimage.label(eroded)
    centres = ndimage.center_of_mass(hu.clip(-1000, 1000) + 1001, labels=labels, index=np.arange(1, count + 1))
    return np.array(centres).reshape(-1, 3)


@pytest.mark.parametrize("geometry", [GEOMETRY, OBLIQUE], ids=["axial", "oblique"])
def test_centres_match_the_books_code_on_random_blobs(geometry):
    rng = np.random.default_rng(3)
    hu = rng.integers(-1100, 1200, size=(20, 40, 44)).astype(np.int16)
    mask = ndimage.binary_dilation(rng.random(hu.shape) > 0.985, iterations=2)
    mask[0] = mask[0] | (rng.random(mask[0].shape) > 0.5)  # components touching the volume's edge
    candidates = group_candidates(mask, hu, geometry, keep_eroded_away=False)
    expected = _book_centres(mask, hu)
    assert len(candidates) == len(expected) > 5
    np.testing.assert_allclose(candidates.center_irc, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(candidates.center_xyz, geometry.irc_to_xyz(expected), atol=1e-9)
    assert (candidates.crop_center_irc == np.rint(expected)).all()


def test_erosion_removes_what_is_one_slice_thick_and_sizes_are_measured_before_erosion():
    mask = np.zeros((12, 30, 30), dtype=bool)
    mask[5, 2:8, 2:8] = True  # one slice thick: the book's erosion removes it
    i, r, c = np.indices(mask.shape)
    ball = ((i - 6) * 2.0) ** 2 + ((r - 18) * 0.5) ** 2 + ((c - 18) * 0.5) ** 2 <= 4.0**2
    mask |= ball
    hu = np.zeros(mask.shape, dtype=np.int16)
    candidates = group_candidates(mask, hu, GEOMETRY, keep_eroded_away=False)
    assert len(candidates) == 1
    np.testing.assert_allclose(candidates.center_irc[0], (6, 18, 18), atol=1e-9)
    expected_diameter = np.cbrt(6 * ball.sum() * 0.5 * 0.5 * 2.0 / np.pi)
    assert candidates.diameter_mm[0] == pytest.approx(expected_diameter, rel=0.02)
    assert candidates.n_voxels[0] < ball.sum()


def test_centre_of_mass_is_weighted_by_clipped_hu_plus_1001():
    mask = np.zeros((5, 5, 7), dtype=bool)
    mask[1:4, 1:4, 1:6] = True  # erodes to the 3 voxels (2, 2, 2..4)
    hu = np.full(mask.shape, -1000, dtype=np.int16)
    hu[2, 2, 4] = 3000  # clipped to 1000: weight 2001 against 1 and 1
    candidates = group_candidates(mask, hu, GEOMETRY)
    expected_col = (2 * 1 + 3 * 1 + 4 * 2001) / (1 + 1 + 2001)
    np.testing.assert_allclose(candidates.center_irc[0], (2, 2, expected_col))


def test_empty_mask_gives_no_candidates_and_a_mask_that_erodes_away_gives_one_unless_book_style():
    hu = np.zeros((4, 8, 8), dtype=np.int16)
    assert len(group_candidates(np.zeros(hu.shape, bool), hu, GEOMETRY)) == 0
    thin = np.zeros(hu.shape, bool)
    thin[2, 2:6, 2:6] = True
    assert len(group_candidates(thin, hu, GEOMETRY, keep_eroded_away=False)) == 0  # the book's
    kept = group_candidates(thin, hu, GEOMETRY)
    np.testing.assert_allclose(kept.center_irc, [(2, 3.5, 3.5)])
    assert kept.diameter_mm[0] == pytest.approx(np.cbrt(6 * 16 * 0.5 * 0.5 * 2.0 / np.pi))


def test_specks_below_the_minimum_diameter_are_dropped_and_sizes_of_the_rest_kept():
    hu = np.zeros((6, 12, 12), dtype=np.int16)
    mask = np.zeros(hu.shape, bool)
    mask[1, 1, 1] = True  # one voxel, 0.5 mm^3: a 0.98 mm sphere
    mask[1, 1, 5:7] = True  # two voxels: 1.24 mm
    mask[2:5, 6:10, 6:10] = True  # survives erosion as 1x2x2; grown back by the cross: 20 voxels, 2.67 mm
    everything = group_candidates(mask, hu, GEOMETRY, min_diameter_mm=0.0)
    np.testing.assert_allclose(
        np.sort(everything.diameter_mm), np.cbrt(6 * np.array([1, 2, 20]) * 0.5 / np.pi), rtol=1e-9
    )
    kept = group_candidates(mask, hu, GEOMETRY, min_diameter_mm=1.1)
    np.testing.assert_allclose(np.sort(kept.diameter_mm), np.cbrt(6 * np.array([2, 20]) * 0.5 / np.pi), rtol=1e-9)
    assert len(kept.center_xyz) == len(kept.n_voxels) == 2
    assert len(group_candidates(mask, hu, GEOMETRY, min_diameter_mm=1.5)) == 1


def test_labels_fall_back_to_int32_beyond_65535_components():
    mask = np.zeros((1, 600, 600), dtype=bool)
    mask[:, ::2, ::2] = True
    labels, count = _label(mask)
    assert count == 90_000 and labels.dtype == np.int32 and labels.max() == 90_000
    small, count = _label(mask[:, :100, :100])
    assert count == 2500 and small.dtype == np.uint16


def test_merge_keeps_the_most_probable_of_close_candidates():
    centres = np.array([[0, 0, 0], [4, 0, 0], [30, 0, 0], [33, 0, 0], [100, 0, 0.0]])
    diameters = np.array([10.0, 2.0, 3.0, 3.0, 5.0])
    probability = np.array([0.6, 0.9, 0.2, 0.1, 0.5])
    kept, sizes = merge_duplicates(centres, diameters, probability, fraction=0.75)
    # 4 mm apart < 0.75 * 10 mm: one lesion, reported by its most probable piece (index 1)
    # 3 mm apart > 0.75 * 3 mm: two candidates
    assert kept.tolist() == [1, 4, 2, 3]
    assert sizes.tolist() == [2, 1, 1, 1]


def test_merge_is_greedy_without_chaining_and_off_at_fraction_zero():
    centres = np.array([[0, 0, 0], [7, 0, 0], [14, 0, 0.0]])
    diameters = np.full(3, 10.0)
    probability = np.array([0.9, 0.5, 0.8])
    kept, sizes = merge_duplicates(centres, diameters, probability, fraction=0.75)
    assert kept.tolist() == [0, 2] and sizes.tolist() == [2, 1]  # 1 joins 0; 2 is 14 mm from 0
    kept, sizes = merge_duplicates(centres, diameters, probability, fraction=0.0)
    assert kept.tolist() == [0, 2, 1] and sizes.tolist() == [1, 1, 1]
    kept, sizes = merge_duplicates(np.zeros((0, 3)), np.zeros(0), np.zeros(0), fraction=0.75)
    assert kept.size == 0 and sizes.size == 0


def test_merge_groups_name_the_kept_candidate_that_stands_for_each():
    centres = np.array([[0, 0, 0], [7, 0, 0], [14, 0, 0.0], [40, 0, 0]])
    probability = np.array([0.9, 0.5, 0.8, 0.1])
    owner = merge_groups(centres, np.full(4, 10.0), probability, fraction=0.75)
    assert owner.tolist() == [0, 0, 2, 3]  # 1 is 7 mm from 0 (kept first) and from 2
    assert merge_groups(centres, np.full(4, 10.0), probability, fraction=0.0).tolist() == [0, 1, 2, 3]


def _ball(shape, centre_irc, radius_mm, spacing_irc):
    i, r, c = np.indices(shape)
    return sum(((a - m) * s) ** 2 for a, m, s in zip((i, r, c), centre_irc, spacing_irc)) <= radius_mm**2


@pytest.mark.parametrize("case", ["small and thin", "on the wall", "on a vessel", "beside a bigger blob"])
def test_every_nodule_the_mask_touches_yields_a_candidate_within_its_radius(case):
    # The candidate-recall contract: what training counts as found (the thresholded mask touches a
    # nodule >= 4 mm) diagnosis must turn into a candidate whose centre lies inside the nodule.
    spacing_irc = (2.0, 0.7, 0.7)
    geometry = Geometry((0.0, 0.0, 0.0), spacing_irc[::-1], (1, 0, 0, 0, 1, 0, 0, 0, 1))
    shape = (20, 60, 60)
    centre, radius_mm = np.array((10.0, 30.0, 30.0)), 2.0  # a 4 mm nodule
    mask = np.zeros(shape, bool)
    if case == "small and thin":  # the U-Net outlines it on one slice, 2 pixels wide: erosion removes it
        mask[10, 29:31, 29:32] = True
    else:
        mask |= _ball(shape, centre, radius_mm, spacing_irc)
        mask[10, 29:31, 29:31] = True
    if case == "on the wall":  # a blob of pleura mask touching the nodule, much larger than it
        mask[6:15, 30:33, 0:29] = True
    elif case == "on a vessel":  # a thin vessel through it, one voxel wide
        mask[10, 30, :] = True
    elif case == "beside a bigger blob":
        big_centre = np.array((10.0, 30.0, 44.0))
        mask |= _ball(shape, big_centre, 6.0, spacing_irc)
    hu = np.where(mask, 40, -850).astype(np.int16)
    candidates = group_candidates(mask, hu, geometry)
    distances_mm = np.linalg.norm((candidates.center_irc - centre) * np.asarray(spacing_irc), axis=1)
    assert len(candidates) >= 1 and distances_mm.min() <= radius_mm, (case, distances_mm)


def test_confident_fraction_is_the_share_of_each_component_above_the_confident_threshold():
    from ct_pipeline.diagnosis.candidates import confident_fraction

    level = np.zeros((10, 20, 20), dtype=np.uint8)
    level[2:5, 2:6, 2:6] = 1
    level[3, 3:5, 3:5] = 2  # 4 of the blob's 48 voxels are confident
    level[6:8, 10:14, 10:14] = 2  # a wholly confident blob
    centres = np.array([[3, 3, 3], [7, 12, 12], [0, 19, 19], [6.4, 9.2, 9.6]])
    fraction = confident_fraction(level, centres)
    # the last centre sits just outside the second blob: the nearest component within 2 voxels counts
    np.testing.assert_allclose(fraction, [4 / 48, 1.0, 0.0, 1.0])


def test_the_detection_score_ranks_confident_components_first_and_is_the_probability_without_weight():
    from ct_pipeline.diagnosis.pipeline import detection_score

    prob = np.array([0.99, 0.95, 0.5])
    confident = np.array([0.0, 1.0, 1.0])
    score = detection_score(prob, confident, 0.5)
    np.testing.assert_allclose(score, [0.495, 0.95, 0.5])
    assert list(np.argsort(-score)) == [1, 2, 0]
    assert detection_score(prob, confident, 0.0) is prob and detection_score(prob, None, 0.5) is prob


def test_a_candidate_smaller_than_the_smallest_nodule_scores_in_proportion_to_its_diameter():
    from ct_pipeline.diagnosis.pipeline import detection_score

    prob, confident = np.array([0.9, 0.9, 0.9]), np.array([1.0, 1.0, 0.0])
    diameter = np.array([1.5, 3.0, 12.0])
    np.testing.assert_allclose(detection_score(prob, confident, 0.5, diameter, 3.0), [0.45, 0.9, 0.45])
    np.testing.assert_allclose(detection_score(prob, None, 0.0, diameter, 3.0), [0.45, 0.9, 0.9])
    assert detection_score(prob, None, 0.0, diameter, 0.0) is prob  # off, as the book
    with pytest.raises(BadInputError, match="smallest nodule -1"):
        DiagnosisConfig(smallest_nodule_mm=-1)


def test_the_budget_ranks_by_confident_fraction_times_diameter_then_diameter_then_index():
    from ct_pipeline.diagnosis.candidates import Candidates, budget_order

    n = 5
    diameter = np.array([3.0, 10.0, 6.0, 2.0, 4.0])
    confident = np.array([1.0, 0.2, 0.5, 0.0, 0.0])  # keys 3, 2, 3, 0, 0
    candidates = Candidates(np.zeros((n, 3)), np.zeros((n, 3)), diameter, np.ones(n, np.int64), confident)
    # 3.0 twice: the larger (6 mm) first; the unconfident ones last, larger first
    assert budget_order(candidates).tolist() == [2, 0, 1, 4, 3]
    without = Candidates(np.zeros((n, 3)), np.zeros((n, 3)), diameter, np.ones(n, np.int64))
    assert budget_order(without).tolist() == [1, 2, 4, 0, 3]
    kept = candidates.take(np.array([4, 1]))
    assert kept.diameter_mm.tolist() == [4.0, 10.0] and kept.confident_fraction.tolist() == [0.0, 0.2]
    assert budget_order(Candidates.empty()).tolist() == []
