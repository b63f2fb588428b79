"""Intensity augmentation of other scanners: calibration moves known values, kernels blur and sharpen
in-plane only, noise levels per sample, labels untouched, and nothing changes while it is off."""

import dataclasses

import pytest
import torch

from ct_pipeline.datasets.augmentation import AugmentationConfig, apply_transforms, augment_batch, sample_transforms
from ct_pipeline.datasets.intensity import IntensityChanges, apply_intensity, blur_in_plane, sample_intensity
from ct_pipeline.errors import BadInputError

SHAPE_3D = (8, 24, 24)
OFF = AugmentationConfig.off()


def _changes(n=1, scale=1.0, offset=0.0, sigma=0.0, amount=0.0, noise=0.0) -> IntensityChanges:
    def full(value):
        return torch.full((n,), float(value))

    return IntensityChanges(full(scale), full(offset), full(sigma), full(amount), full(noise))


def _checkerboard(spatial, low=-500.0, high=500.0) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(s) for s in spatial[-2:]], indexing="ij")
    board = torch.where((grids[0] + grids[1]) % 2 == 0, high, low)
    return board.expand(*spatial).clone()


def _augment_batch_before_intensity(images, config, generator, labels=None):
    """augment_batch as it was before the intensity changes (commit b3bdb29), to pin 'off' against."""
    n, spatial = images.shape[0], tuple(images.shape[2:])
    transforms = sample_transforms(n, spatial, config, generator)
    out, moved = images, labels
    if config.geometric:
        result = apply_transforms(images, transforms, labels)
        out, moved = result if labels is not None else (result, None)
    if config.noise_hu > 0:
        noise = torch.randn(images.shape, generator=generator, device=generator.device, dtype=torch.float32)
        out = out + (noise.to(out.device) * config.noise_hu).to(out.dtype)
    return out if labels is None else (out, moved)


def test_a_known_calibration_moves_a_known_voxel_exactly_and_air_stays_in_the_window():
    images = torch.tensor([100.0, 40.0, -850.0, -1000.0, 1000.0]).view(1, 1, 1, 5)
    config = dataclasses.replace(OFF, hu_scale_fraction=0.25, hu_offset_hu=20.0)
    out = apply_intensity(images, _changes(scale=1.25, offset=-20.0), config)
    # 100 * 1.25 - 20 = 105; lung (-1082.5), air and the window's top map outside it: clipped back
    assert out.flatten().tolist() == [105.0, 30.0, -1000.0, -1000.0, 1000.0]
    brighter = apply_intensity(images, _changes(scale=0.75, offset=20.0), config)
    assert brighter.flatten().tolist() == [95.0, 50.0, -617.5, -730.0, 770.0]


def test_random_calibration_is_one_affine_map_per_sample_within_its_ranges():
    config = dataclasses.replace(OFF, hu_scale_fraction=0.1, hu_offset_hu=50.0)
    images = torch.full((16, 1, *SHAPE_3D), -850.0)
    images[:, :, 2:5, 8:14, 8:14] = 40.0
    out = augment_batch(images, config, torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    sample_transforms(16, SHAPE_3D, config, generator)  # the draws augment_batch makes first
    drawn = sample_intensity(16, config, generator)
    for k in range(16):
        scale, offset = drawn.hu_scale[k].item(), drawn.hu_offset_hu[k].item()
        assert 0.9 <= scale <= 1.1 and -50.0 <= offset <= 50.0
        assert out[k].unique().tolist() == pytest.approx([-850.0 * scale + offset, 40.0 * scale + offset])
    assert drawn.hu_scale.std() > 0.03 and drawn.hu_offset_hu.std() > 15.0, "the samples differ"


@pytest.mark.parametrize("shape", [(2, 7, 32, 32), (2, 1, *SHAPE_3D)], ids=["2d-7-channels", "3d"])
def test_blur_lowers_a_checkerboards_std_in_plane_only(shape):
    images = _checkerboard(shape)
    flat = (slice(None), 0) if len(shape) == 4 else (slice(None), slice(None), 0)
    rest = (slice(None), slice(1, None)) if len(shape) == 4 else (slice(None), slice(None), slice(1, None))
    images[flat] = 0.0  # one flat context channel (2D) / slice (3D): a blur across them would disturb it
    blurred = blur_in_plane(images, torch.tensor([1.0, 0.0]))
    assert images[rest][0].std().item() == pytest.approx(500.0, rel=0.01)
    assert blurred[rest][0].std().item() < 0.2 * 500.0  # SD 1 voxel nearly erases a 1-voxel checkerboard
    assert torch.equal(blurred[flat], images[flat]), "nothing leaks across channels or slices"
    assert torch.allclose(blurred[1], images[1], atol=1e-3), "SD 0 leaves its sample alone"


def test_sharpening_raises_an_edges_contrast():
    images = torch.full((1, 1, 4, 16, 16), -800.0)
    images[..., 8:] = 100.0  # an edge between columns 7 and 8
    config = dataclasses.replace(OFF, sharpen_amount_max=1.0)
    out = apply_intensity(images, _changes(amount=1.0), config)
    before = (images[..., 8] - images[..., 7]).mean().item()
    after = (out[..., 8] - out[..., 7]).mean().item()
    assert before == 900.0 and after > 1.3 * before
    assert out[..., 0].mean().item() == pytest.approx(-800.0, abs=0.1), "flat regions stay"


def test_labels_are_untouched_by_intensity_changes():
    config = dataclasses.replace(OFF, hu_scale_fraction=0.1, hu_offset_hu=50.0, blur_sigma_max_vox=1.0)
    config = dataclasses.replace(config, sharpen_amount_max=1.0, kernel_probability=1.0, noise_max_hu=50.0)
    images = _checkerboard((7, 32, 32))[None].repeat(4, 1, 1, 1)
    labels = (torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    out, out_labels = augment_batch(images, config, torch.Generator().manual_seed(2), labels)
    assert torch.equal(out_labels, labels)
    assert not torch.allclose(out, images)


@pytest.mark.parametrize(
    "config",
    [AugmentationConfig(), AugmentationConfig.book_segmentation(), dataclasses.replace(OFF, noise_hu=25.0)],
    ids=["classification", "segmentation", "noise-only"],
)
@pytest.mark.parametrize("shape", [(3, 7, 20, 24), (3, 1, *SHAPE_3D)], ids=["2d", "3d"])
def test_with_the_new_fields_off_a_seed_gives_what_it_gave_before_them(config, shape):
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 300
    labels = (images[:, :1] > 0).float()
    ours, theirs = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    for _ in range(2):  # two batches: the second shows the first drew nothing extra
        out, moved = augment_batch(images, config, ours, labels)
        expected, expected_moved = _augment_batch_before_intensity(images, config, theirs, labels)
        assert torch.equal(out, expected) and torch.equal(moved, expected_moved)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_each_samples_noise_sd_lies_in_its_range_and_the_batch_spans_it():
    config = dataclasses.replace(OFF, noise_hu=20.0, noise_max_hu=80.0)
    images = torch.full((16, 1, *SHAPE_3D), -300.0)
    out = augment_batch(images, config, torch.Generator().manual_seed(3))
    measured = (out - images).flatten(1).std(dim=1)
    generator = torch.Generator().manual_seed(3)
    sample_transforms(16, SHAPE_3D, config, generator)
    torch.randn(images.shape, generator=generator)
    drawn = sample_intensity(16, config, generator).noise_sd_hu
    assert torch.allclose(measured, drawn, rtol=0.04)
    assert bool(((measured > 20.0 * 0.96) & (measured < 80.0 * 1.04)).all())
    assert measured.min() < 40.0 and measured.max() > 60.0, "one batch holds quiet and noisy samples"


def test_the_kernel_changes_about_its_share_of_samples_and_both_kinds_when_both_are_on():
    config = dataclasses.replace(OFF, kernel_probability=0.5, blur_sigma_max_vox=1.0, sharpen_amount_max=1.0)
    drawn = sample_intensity(4000, config, torch.Generator().manual_seed(0))
    blurred, sharpened = (drawn.blur_sigma_vox > 0).float().mean(), (drawn.sharpen_amount > 0).float().mean()
    assert blurred.item() == pytest.approx(0.25, abs=0.03) and sharpened.item() == pytest.approx(0.25, abs=0.03)
    assert not bool(((drawn.blur_sigma_vox > 0) & (drawn.sharpen_amount > 0)).any())
    assert drawn.blur_sigma_vox.max() <= 1.0 and drawn.sharpen_amount.max() <= 1.0
    only_blur = sample_intensity(4000, dataclasses.replace(config, sharpen_amount_max=0.0), torch.Generator())
    assert (only_blur.blur_sigma_vox > 0).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_settings_are_checked_and_counted():
    assert not OFF.enabled()
    assert dataclasses.replace(OFF, blur_sigma_max_vox=0.5).enabled()
    assert not dataclasses.replace(OFF, blur_sigma_max_vox=0.5, kernel_probability=0.0).enabled()
    assert dataclasses.replace(OFF, hu_offset_hu=10.0).enabled() and dataclasses.replace(OFF, noise_max_hu=5).enabled()
    robust = AugmentationConfig().scanner_robust()
    assert (robust.hu_scale_fraction, robust.hu_offset_hu, robust.noise_max_hu) == (0.1, 50.0, 75.0)
    assert (robust.blur_sigma_max_vox, robust.sharpen_amount_max, robust.rotation_deg) == (1.0, 1.0, 180.0)
    kernel_only = AugmentationConfig().scanner_robust(("kernel",))
    assert kernel_only.kernel and not kernel_only.calibration and kernel_only.noise_max_hu == 0.0
    assert OFF.scanner_robust(("noise",)).noise_max_hu == 75.0 and not OFF.scanner_robust(("noise",)).kernel
    with pytest.raises(BadInputError, match=r"^intensity augmentation part 'contrast' is not one of calibration"):
        OFF.scanner_robust(("contrast",))
    with pytest.raises(BadInputError, match=r"^augmentation noise_max_hu = 10\.0 is below noise_hu = 25\.0"):
        AugmentationConfig(noise_max_hu=10.0)
    for field, bad in (("hu_scale_fraction", 0.6), ("hu_offset_hu", -1.0), ("kernel_probability", 1.5)):
        with pytest.raises(BadInputError, match=f"^augmentation {field} = {bad}: expected a number from"):
            AugmentationConfig(**{field: bad})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_intensity_changes_match_the_cpu():
    config = AugmentationConfig().scanner_robust()
    images = torch.randn(4, 1, *SHAPE_3D, generator=torch.Generator().manual_seed(0)) * 300
    changes = sample_intensity(4, dataclasses.replace(config, kernel_probability=1.0), torch.Generator().manual_seed(1))
    on_cpu = apply_intensity(images, changes, config)
    on_gpu = apply_intensity(images.cuda(), changes, config)
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-2)
    first = augment_batch(images.cuda(), config, torch.Generator("cuda").manual_seed(9))
    again = augment_batch(images.cuda(), config, torch.Generator("cuda").manual_seed(9))
    assert torch.equal(first, again) and first.device.type == "cuda"
