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
    assert measured.long_axis_mm == pytest.approx(12.0, abs=0.6) and measured.short_axis_mm == pytest.approx(
        6.0, abs=0.6
    )
    assert measured.mean_diameter_mm == pytest.approx((measured.long_axis_mm + measured.short_axis_mm) / 2)
    assert measured.hu_mean == 40.0 and measured.hu_std == 0.0


def _blurred_sphere(shape, spacing, radius_mm, edge_mm=1.0, inside_hu=40.0, lung_hu=-850.0):
    grids = np.indices(shape).astype(np.float64)
    centre = (np.array(shape) - 1) / 2
    rho = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)))
    fraction = np.clip((radius_mm - rho) / edge_mm + 0.5, 0.0, 1.0)
    return (lung_hu + (inside_hu - lung_hu) * fraction).astype(np.int16), rho


@pytest.mark.parametrize("spacing", [(1.25, 0.7, 0.7), (2.5, 0.6, 0.6)])
def test_the_outline_cuts_a_too_wide_component_at_the_spheres_true_surface(spacing):
    from ct_pipeline.diagnosis.volumetry import outline_nodule

    hu, rho = _blurred_sphere((24, 40, 40), spacing, radius_mm=4.0)
    wide = rho <= 5.0  # a U-Net mask that took in the blurred rim
    start, outline = outline_nodule(hu, (0, 0, 0), wide, spacing)
    true_mm3 = 4 / 3 * np.pi * 4.0**3
    assert outline.sum() * np.prod(spacing) == pytest.approx(true_mm3, rel=0.08)
    assert wide.sum() * np.prod(spacing) > 1.5 * true_mm3  # what it started from


def test_without_lung_around_it_the_outline_is_the_component():
    from ct_pipeline.diagnosis.volumetry import outline_nodule

    hu = np.full((10, 10, 10), 40, dtype=np.int16)  # soft tissue everywhere: no edge to find
    component = np.zeros((3, 3, 3), bool)
    component[1] = True
    start, outline = outline_nodule(hu, (4, 4, 4), component, (1.0, 1.0, 1.0))
    assert start == (4, 4, 4) and np.array_equal(outline, component)


@pytest.mark.parametrize("wall_from_edge_mm", [0.5, -1.0], ids=["beside-the-wall", "into-the-wall"])
def test_a_nodule_on_the_lung_wall_is_cut_from_the_wall_the_unet_took_with_it(wall_from_edge_mm):
    from ct_pipeline.diagnosis.volumetry import outline_nodule

    spacing = (1.0, 0.8, 0.8)
    hu, rho = _blurred_sphere((30, 60, 60), spacing, radius_mm=5.0)
    cols_mm = np.arange(60) * 0.8
    centre_col_mm = (60 - 1) / 2 * 0.8
    wall = cols_mm < centre_col_mm - 5.0 - wall_from_edge_mm  # soft tissue, as dense as the nodule
    hu[:, :, wall] = 40
    component = (rho <= 6.0) | ((rho <= 12.0) & wall[None, None, :])  # the nodule and more of the wall
    start, outline = outline_nodule(hu, (0, 0, 0), component, spacing, center_irc=(15, 30, 30))
    true_mm3 = 4 / 3 * np.pi * 5.0**3
    assert component.sum() * np.prod(spacing) > 2 * true_mm3
    assert outline.sum() * np.prod(spacing) == pytest.approx(true_mm3, rel=0.15)
