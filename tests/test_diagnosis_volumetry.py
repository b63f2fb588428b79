"""Volumetry of a mask component: volume, long and short axis in millimetres, HU."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.diagnosis.volumetry import axes_mm, measure_mask


def _ellipse(shape_rc, spacing_rc, semi_axes_mm, angle_deg):
    rows, cols = np.indices(shape_rc).astype(np.float64)
    y = (rows - (shape_rc[0] - 1) / 2) * spacing_rc[0]
    x = (cols - (shape_rc[1] - 1) / 2) * spacing_rc[1]
    t = np.radians(angle_deg)
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    return (u / semi_axes_mm[0]) ** 2 + (v / semi_axes_mm[1]) ** 2 <= 1.0


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_axes_of_an_ellipse_on_anisotropic_pixels_whatever_its_orientation(angle):
    spacing = np.array([0.4, 0.6])
    pixels = _ellipse((101, 81), spacing, (12.0, 5.0), angle)
    long_mm, short_mm = axes_mm(pixels, spacing)
    assert long_mm == pytest.approx(24.0, abs=1.0)  # 2 x 12 mm, to about a pixel
    assert short_mm == pytest.approx(10.0, abs=1.0)


def test_a_single_pixel_is_one_pixel_wide_and_an_empty_slice_nothing():
    assert axes_mm(np.ones((1, 1), bool), np.array([0.7, 0.7])) == pytest.approx((0.7, 0.7))
    assert axes_mm(np.zeros((3, 3), bool), np.array([0.7, 0.7])) == (0.0, 0.0)


def test_volume_axes_slice_and_hu_of_a_component_in_the_volume():
    hu = np.full((20, 40, 40), -800, dtype=np.int16)
    mask = np.zeros((3, 30, 30), bool)
    mask[0] = _ellipse((30, 30), np.array([0.5, 0.5]), (4.0, 2.0), 0.0)
    mask[1] = _ellipse((30, 30), np.array([0.5, 0.5]), (6.0, 3.0), 0.0)  # the longest slice
    mask[2] = mask[0]
    start = (5, 4, 6)
    box = tuple(slice(s, s + n) for s, n in zip(start, mask.shape))
    hu[box][mask] = 40
    measured = measure_mask(mask, start, (2.5, 0.5, 0.5), hu)
    assert measured.n_voxels == int(mask.sum())
    assert measured.volume_mm3 == pytest.approx(mask.sum() * 2.5 * 0.5 * 0.5)
    assert measured.axis_slice_index == 6
    assert measured.long_axis_mm == pytest.approx(12.0, abs=0.6) and measured.short_axis_mm == pytest.approx(6.0, abs=0.6)
    assert measured.mean_diameter_mm == pytest.approx((measured.long_axis_mm + measured.short_axis_mm) / 2)
    assert measured.hu_mean == 40.0 and measured.hu_std == 0.0
