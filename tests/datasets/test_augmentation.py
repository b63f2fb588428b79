"""Augmentation: each part moves a known voxel where it should; switches, noise, determinism, labels."""

import math

import pytest
import torch

from ct_pipeline.datasets.augmentation import (
    AugmentationConfig,
    SampleTransforms,
    apply_transforms,
    augment_batch,
    sample_transforms,
)
from ct_pipeline.errors import BadInputError

SHAPE_3D = (16, 24, 24)
SHAPE_2D = (24, 32)


def _point_volume(spatial, point, value=1000.0, channels=1):
    images = torch.zeros(1, channels, *spatial)
    images[(0, slice(None), *point)] = value
    return images


def _centroid(image: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre of mass of a (spatial...) tensor, voxel indices."""
    weights = image.clamp(min=0).double()
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in image.shape], indexing="ij")
    return torch.stack([(g * weights).sum() / weights.sum() for g in grids])


def _with(nd, **fields) -> SampleTransforms:
    base = SampleTransforms.identity(1, nd)
    values = {name: getattr(base, name) for name in ("flip", "scale", "angle_rad", "shift_vox")}
    values.update(fields)
    return SampleTransforms(**values)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flip_moves_a_voxel_to_the_mirrored_index(axis):
    point = (3, 5, 19)
    flip = torch.zeros(1, 3, dtype=torch.bool)
    flip[0, axis] = True
    out = apply_transforms(_point_volume(SHAPE_3D, point), _with(3, flip=flip))
    expected = list(point)
    expected[axis] = SHAPE_3D[axis] - 1 - point[axis]
    assert torch.nonzero(out[0, 0] > 1).tolist() == [expected]
    assert out[0, 0][tuple(expected)].item() == pytest.approx(1000.0, abs=1e-2)


@pytest.mark.parametrize(
    "spatial, point, shift",
    [
        (SHAPE_3D, (8, 12, 12), (3.0, 0.0, 0.0)),
        (SHAPE_3D, (8, 12, 12), (0.0, -4.0, 2.0)),
        (SHAPE_2D, (10, 7), (5.0, -3.0)),
    ],
)
def test_shift_of_k_voxels_moves_a_voxel_by_k(spatial, point, shift):
    nd = len(spatial)
    out = apply_transforms(_point_volume(spatial, point), _with(nd, shift_vox=torch.tensor([shift])))
    expected = [p + int(s) for p, s in zip(point, shift)]
    assert torch.nonzero(out[0, 0] > 1).tolist() == [expected]
    assert out[0, 0][tuple(expected)].item() == pytest.approx(1000.0, abs=1e-2)


def test_random_shift_in_augment_batch_really_moves_the_image():
    """The book's 2D shift did nothing (its translation was sliced away); ours must move by the drawn amount."""
    config = AugmentationConfig(mirror=False, shift_fraction=0.5, scale_fraction=0.0, rotation_deg=0.0, noise_hu=0.0)
    images = _point_volume(SHAPE_2D, (12, 16)).repeat(8, 1, 1, 1)
    out = augment_batch(images, config, torch.Generator().manual_seed(3))
    drawn = sample_transforms(8, SHAPE_2D, config, torch.Generator().manual_seed(3)).shift_vox
    moved = 0
    for k in range(8):
        expected = torch.tensor([12.0, 16.0]) + drawn[k]
        assert torch.allclose(_centroid(out[k, 0]), expected.double(), atol=0.05)
        moved += int(drawn[k].abs().max() >= 1)
    assert moved >= 4, "with up to half a side of shift most samples move by a voxel or more"


@pytest.mark.parametrize("scale", [(1.0, 1.5, 1.0), (1.0, 1.0, 0.7), (1.3, 1.0, 1.0)])
def test_scale_moves_an_off_centre_point_by_the_factor(scale):
    center = [(n - 1) / 2 for n in SHAPE_3D]
    point = (13, 19, 4)
    out = apply_transforms(_point_volume(SHAPE_3D, point), _with(3, scale=torch.tensor([scale])))
    expected = torch.tensor([c + s * (p - c) for c, s, p in zip(center, scale, point)], dtype=torch.float64)
    assert torch.allclose(_centroid(out[0, 0]), expected, atol=1.0)
    assert (_centroid(out[0, 0]) - torch.tensor(point, dtype=torch.float64)).abs().max() > 1.0


@pytest.mark.parametrize("angle_deg", [90.0, 30.0, -135.0])
def test_rotation_turns_a_point_about_the_slice_axis(angle_deg):
    angle = math.radians(angle_deg)
    center = [(n - 1) / 2 for n in SHAPE_3D]
    offset_r, offset_c = 7.0, 2.0
    point = (5, int(center[1] + offset_r + 0.5), int(center[2] + offset_c + 0.5))
    q_r, q_c = point[1] - center[1], point[2] - center[2]
    out = apply_transforms(_point_volume(SHAPE_3D, point), _with(3, angle_rad=torch.tensor([angle])))
    expected = torch.tensor(
        [
            point[0],
            center[1] + math.cos(angle) * q_r - math.sin(angle) * q_c,
            center[2] + math.sin(angle) * q_r + math.cos(angle) * q_c,
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(_centroid(out[0, 0]), expected, atol=1.0)
    assert _centroid(out[0, 0])[0].item() == pytest.approx(point[0], abs=1e-6), "the slice axis is left alone"


def test_rotation_of_a_non_square_slice_keeps_distances():
    # grid units differ per axis on a 24x32 slice: a rotation written in them would shear
    point = (6, 16)
    out = apply_transforms(_point_volume(SHAPE_2D, point), _with(2, angle_rad=torch.tensor([math.pi / 2])))
    center = torch.tensor([(SHAPE_2D[0] - 1) / 2, (SHAPE_2D[1] - 1) / 2], dtype=torch.float64)
    before = torch.tensor(point, dtype=torch.float64) - center
    after = _centroid(out[0, 0]) - center
    assert after.norm().item() == pytest.approx(before.norm().item(), abs=0.5)


def test_noise_has_the_configured_std_and_leaves_geometry_alone():
    config = AugmentationConfig(mirror=False, shift_fraction=0.0, scale_fraction=0.0, rotation_deg=0.0, noise_hu=25.0)
    images = torch.full((8, 1, *SHAPE_3D), -300.0)
    out = augment_batch(images, config, torch.Generator().manual_seed(0))
    diff = out - images
    assert diff.std().item() == pytest.approx(25.0, rel=0.03)
    assert diff.mean().item() == pytest.approx(0.0, abs=0.5)


def test_all_switches_off_returns_the_input_unchanged():
    images = torch.randn(4, 7, *SHAPE_2D)
    labels = (torch.rand(4, 1, *SHAPE_2D) > 0.5).float()
    config = AugmentationConfig.off()
    assert not config.enabled()
    out, out_labels = augment_batch(images, config, torch.Generator().manual_seed(0), labels)
    assert torch.equal(out, images) and torch.equal(out_labels, labels)


def test_same_seed_same_output_and_another_seed_differs():
    images = torch.randn(4, 1, *SHAPE_3D) * 300
    config = AugmentationConfig()
    first = augment_batch(images, config, torch.Generator().manual_seed(11))
    again = augment_batch(images, config, torch.Generator().manual_seed(11))
    other = augment_batch(images, config, torch.Generator().manual_seed(12))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_turning_noise_off_does_not_change_the_affine_draws():
    images = torch.randn(4, 1, *SHAPE_3D) * 300
    with_noise = augment_batch(images, AugmentationConfig(noise_hu=25.0), torch.Generator().manual_seed(5))
    without = augment_batch(images, AugmentationConfig(noise_hu=0.0), torch.Generator().manual_seed(5))
    assert (with_noise - without).std().item() == pytest.approx(25.0, rel=0.05)


def test_segmentation_label_moves_with_the_image():
    images = torch.full((6, 7, 40, 40), -800.0)
    labels = torch.zeros(6, 1, 40, 40)
    images[:, :, 8:17, 22:30] = 200.0  # a dense block off-centre, labelled
    labels[:, :, 8:17, 22:30] = 1.0
    config = AugmentationConfig(mirror=True, shift_fraction=0.2, scale_fraction=0.2, rotation_deg=180.0, noise_hu=0.0)
    out, moved = augment_batch(images, config, torch.Generator().manual_seed(1), labels)
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    for k in range(6):
        dense = out[k, 3] > -300
        label = moved[k, 0] > 0.5
        overlap = (dense & label).sum().item() / (dense | label).sum().item()
        assert overlap > 0.8, f"sample {k}: label and image overlap only {overlap:.2f}"
        assert torch.allclose(_centroid(label.float()), _centroid(dense.float()), atol=1.0)
    assert not torch.equal(moved, labels), "the transform did move things"


def test_bad_settings_are_refused_and_shapes_checked():
    with pytest.raises(BadInputError, match="scale_fraction"):
        AugmentationConfig(scale_fraction=1.5)
    with pytest.raises(BadInputError, match="expected"):
        augment_batch(torch.zeros(3, 3), AugmentationConfig(), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_the_same_transforms_give_the_cpu_result_and_seeds_repeat():
    images = torch.randn(4, 1, *SHAPE_3D) * 300
    transforms = sample_transforms(4, SHAPE_3D, AugmentationConfig(), torch.Generator().manual_seed(2))
    on_cpu = apply_transforms(images, transforms)
    on_gpu = apply_transforms(images.cuda(), transforms)
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-2)
    first = augment_batch(images.cuda(), AugmentationConfig(), torch.Generator("cuda").manual_seed(9))
    again = augment_batch(images.cuda(), AugmentationConfig(), torch.Generator("cuda").manual_seed(9))
    assert torch.equal(first, again)
