"""The classifiers' one crop function: native = the book's crop bit for bit; resampled = SimpleITK's
linear samples, centred on the point, the same millimetres from any native spacing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.crops import check_crop_spacing, crop_start_irc, cut_crop, native_extent_irc, resampled_crop
from ct_pipeline.errors import BadInputError
from ct_pipeline.geometry import Geometry

CROP = (32, 48, 48)


def _random_volume(shape=(40, 60, 70), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(np.int16)


@pytest.mark.parametrize("center", [(20, 30, 35), (0, 0, 0), (39, 59, 69), (5.4, 58.6, 1.2)])
def test_native_is_todays_crop_bit_for_bit(center):
    hu = _random_volume()
    crop = resampled_crop(hu, np.array(center), CROP, (2.5, 0.7, 0.7), None)
    expected = cut_crop(hu, crop_start_irc(np.array(center), CROP), CROP, -1000)
    assert crop.dtype == np.int16
    np.testing.assert_array_equal(crop, expected)


def test_native_from_a_stored_box_equals_native_from_the_volume():
    hu = _random_volume()
    box = np.ascontiguousarray(hu[4:, 10:, 5:])
    # crops within the box, or past the volume's far faces (the box is cut only at its near ones)
    for center in ([22, 35, 40], [20, 34, 29], [39, 59, 69]):
        np.testing.assert_array_equal(
            resampled_crop(box, np.array(center), CROP, (1, 1, 1), None, origin_irc=(4, 10, 5)),
            resampled_crop(hu, np.array(center), CROP, (1, 1, 1), None),
        )


def test_resampling_at_the_native_spacing_on_a_voxel_is_the_native_crop():
    """The grids agree: centre voxel crop // 2 on the centre, one native voxel per step."""
    hu = _random_volume()
    native = (2.5, 0.7, 0.7)
    for center in ([20, 30, 35], [3, 2, 66]):
        crop = resampled_crop(hu, np.array(center, float), CROP, native, native)
        assert crop.dtype == np.float32
        np.testing.assert_array_equal(crop, resampled_crop(hu, np.array(center), CROP, native, None))


def _sitk_crop(hu, center_irc, crop_irc, native_irc_mm, target_irc_mm):
    """SimpleITK's Resample (sitkLinear) of the whole volume onto the crop's grid."""
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(tuple(float(v) for v in native_irc_mm[::-1]))
    first_mm = np.asarray(center_irc) * native_irc_mm - (np.asarray(crop_irc) // 2) * np.asarray(target_irc_mm)
    return sitk.GetArrayFromImage(
        sitk.Resample(
            image,
            [int(n) for n in crop_irc[::-1]],
            sitk.Transform(),
            sitk.sitkLinear,
            tuple(float(v) for v in first_mm[::-1]),
            tuple(float(v) for v in target_irc_mm[::-1]),
            (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
            -1000.0,
            sitk.sitkFloat32,
        )
    )


@pytest.mark.parametrize(
    "native, target, center",
    [
        ((2.5, 0.7, 0.7), (1.25, 0.8, 0.8), (40.3, 90.6, 101.2)),  # finer along z, coarser in-plane
        ((0.8, 0.6, 0.6), (1.5, 1.0, 1.0), (60.0, 80.0, 80.0)),  # coarser everywhere
        ((1.25, 0.9, 0.7), (1.25, 0.9, 0.7), (50.5, 70.25, 90.75)),  # native spacing, between voxels
    ],
)
def test_resampled_crops_are_simpleitks_linear_samples(native, target, center):
    hu = _random_volume((120, 180, 200), seed=3)
    crop = resampled_crop(hu, np.array(center), CROP, native, target)
    reference = _sitk_crop(hu, np.array(center), CROP, np.array(native), np.array(target))
    assert crop.shape == CROP and crop.dtype == np.float32
    np.testing.assert_allclose(crop, reference, atol=0.02)  # float32 rounding of HU in the thousands


def test_the_crop_reads_only_the_native_box_it_declares():
    """Values outside [centre - before, centre + after) do not reach the crop (what the cache stores)."""
    native, target = (2.5, 0.7, 0.7), (1.25, 0.9, 0.9)
    hu = _random_volume((60, 120, 120), seed=4)
    center = np.array([30.4, 60.3, 59.6])
    before, after = native_extent_irc(CROP, target, native)
    lo, hi = np.rint(center).astype(int) - before, np.rint(center).astype(int) + after
    fenced = np.full_like(hu, 5000)
    fenced[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    np.testing.assert_array_equal(
        resampled_crop(fenced, center, CROP, native, target), resampled_crop(hu, center, CROP, native, target)
    )


def _sphere_volume(spacing_irc_mm, radius_mm: float, extent_mm: float = 64.0):
    """A 200 HU sphere in -1000 HU air, partial-volume rendered (4x4x4 subsamples per voxel), and
    its centre's voxel index (fractional: between voxels)."""
    spacing = np.asarray(spacing_irc_mm)
    shape = tuple(int(n) for n in np.ceil(extent_mm / spacing))
    center_mm = np.asarray(shape) * spacing / 2 + np.array([0.3, -0.2, 0.1])
    fraction = np.zeros(shape)
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    grids = np.indices(shape).astype(float)
    for di in offsets:
        for dr in offsets:
            for dc in offsets:
                points = [(grids[a] + d) * spacing[a] - center_mm[a] for a, d in enumerate((di, dr, dc))]
                fraction += (points[0] ** 2 + points[1] ** 2 + points[2] ** 2 <= radius_mm**2) / 64
    return (-1000 + 1200 * fraction).astype(np.float32), center_mm / spacing


def test_a_sphere_has_the_same_size_in_crops_from_two_native_spacings():
    """In voxels the 8 mm radius sphere differs 3.6x between the scans; in the resampled crops it is one size."""
    radius, target = 8.0, (1.25, 0.75, 0.75)
    counts = []
    for native in ((2.5, 0.7, 0.7), (0.8, 0.9, 0.9)):
        hu, center_irc = _sphere_volume(native, radius)
        native_voxels = int((hu > -400).sum())
        crop = resampled_crop(hu, center_irc, CROP, native, target)
        counts.append(int((crop > -400).sum()))
        assert crop[16, 24, 24] == pytest.approx(200.0, abs=1.0), "the sphere's centre is the crop's centre"
        assert native_voxels * np.prod(native) == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.05)
    expected = 4 / 3 * np.pi * radius**3 / np.prod(target)  # 4766 crop voxels
    assert counts[0] == pytest.approx(counts[1], rel=0.03)
    assert counts[0] == pytest.approx(expected, rel=0.05) and counts[1] == pytest.approx(expected, rel=0.05)


def test_a_point_at_a_known_xyz_lands_at_the_crop_centre():
    """A volume whose HU are a linear function of the voxel index: linear interpolation is exact on it,
    so the crop's centre reads the value at the point, and one crop voxel is one target spacing."""
    geometry = Geometry((-120.0, 80.0, -300.0), (0.7, 0.7, 2.5), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    i, r, c = np.indices((50, 90, 100)).astype(np.float32)
    hu = 7.0 * i + 2.0 * r - 3.0 * c  # per voxel index, not per mm
    point_xyz = np.array([-151.92, 115.14, -236.75])  # voxel (25.3, 45.6, 50.2) of the rotated grid
    center_irc = geometry.xyz_to_irc(point_xyz[None])[0]
    np.testing.assert_allclose(center_irc, [25.3, 45.6, 50.2], atol=1e-9)
    target = (1.0, 0.5, 1.4)
    crop = resampled_crop(hu, center_irc, CROP, geometry.spacing_xyz[::-1], target)
    assert crop[16, 24, 24] == pytest.approx(7.0 * center_irc[0] + 2.0 * center_irc[1] - 3.0 * center_irc[2], abs=1e-3)
    assert crop[17, 24, 24] - crop[16, 24, 24] == pytest.approx(7.0 * 1.0 / 2.5, abs=1e-3)
    assert crop[16, 25, 24] - crop[16, 24, 24] == pytest.approx(2.0 * 0.5 / 0.7, abs=1e-3)
    assert crop[16, 24, 25] - crop[16, 24, 24] == pytest.approx(-3.0 * 1.4 / 0.7, abs=1e-3)


def test_beyond_the_volume_the_crop_is_air():
    hu = np.full((20, 60, 60), 100, dtype=np.int16)
    crop = resampled_crop(hu, np.array([0.0, 30.0, 30.0]), CROP, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert (crop[:14] == -1000).all(), "slices more than a native voxel before slice 0 are air"
    assert (crop[16:] == 100).all()


@pytest.mark.parametrize("bad", [(1.0, 1.0), (0.0, 1.0, 1.0), (1.0, float("nan"), 1.0), ("a", 1, 1), (30, 1, 1)])
def test_bad_spacings_are_refused(bad):
    with pytest.raises(BadInputError, match="crop spacing"):
        check_crop_spacing(bad)
