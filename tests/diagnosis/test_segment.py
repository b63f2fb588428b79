"""Segmentation step: the folded U-Net, the book's input, lung boxes and tiles that change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ct_pipeline.diagnosis.fast_unet import fold_unet
from ct_pipeline.diagnosis.lungs import find_lung_region
from ct_pipeline.diagnosis.segment import HALO, context_input, plan_batches, region_pixel_fraction, segment_volume
from ct_pipeline.models import prepare_for_inference
from ct_pipeline.models.unet import SegmentationUNet, UNetConfig
from tests.helpers.diagnosis_tiny import SPACING_XYZ, phantom_chest, threshold_unet


def _randomised(config: UNetConfig, seed: int = 0) -> SegmentationUNet:
    """A U-Net whose BatchNorms have non-trivial statistics (what folding must get right)."""
    torch.manual_seed(seed)
    model = SegmentationUNet(config)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-2, 2)
            module.running_var.uniform_(0.5, 3)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    # HU in, as the book's input BatchNorm expects them: centred near lung tissue
    model.input_batchnorm.running_mean.uniform_(-600, -400)
    model.input_batchnorm.running_var.uniform_(300**2, 500**2)
    return model.eval()


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(wf=2),
        UNetConfig(wf=2, up_mode="upsample"),
        UNetConfig(wf=2, batch_norm=False),
        UNetConfig(wf=1, depth=2, in_channels=3),
    ],
    ids=["book", "upsample", "no-batchnorm", "depth-2"],
)
def test_folded_unet_matches_the_original(config):
    model = _randomised(config)
    x = torch.randn(2, config.in_channels, 40, 44) * 3
    with torch.no_grad():
        expected = model.unet(model.input_batchnorm(x))  # logits: no sigmoid saturation to hide errors
        folded = fold_unet(model)
        got = folded.logits(x)
        probabilities = folded(x)
    # border rows and columns included: that is where the zero padding had to be corrected
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert float(expected.abs().max()) > 1.0  # outputs near 0 would prove nothing
    assert torch.allclose(probabilities, torch.sigmoid(expected), atol=1e-5)


def test_folding_removes_the_batchnorms():
    folded = fold_unet(_randomised(UNetConfig(wf=2)))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0


def test_context_input_clamps_slices_clips_hu_and_pads_to_the_pooling_grid():
    hu = (np.arange(5, dtype=np.int16)[:, None, None] * 600 - 1400 + np.zeros((5, 6, 10), np.int16)).astype(np.int16)
    batch = context_input(hu, [0, 4], (0, 6, 0, 10), context_slices=3, hu_range=(-1000.0, 1000.0))
    assert batch.shape == (2, 7, 8, 12) and batch.dtype == torch.float32
    # slice 0: indices -3..3 clamped to 0,0,0,0,1,2,3; values -1400,-800,-200,400 clipped at -1000
    assert batch[0, :, 0, 0].tolist() == [-1000, -1000, -1000, -1000, -800, -200, 400]
    # slice 4: indices 1..7 clamped to 1,2,3,4,4,4,4; 1000 clipped from 1000
    assert batch[1, :, 0, 0].tolist() == [-800, -200, 400, 1000, 1000, 1000, 1000]
    assert (batch[:, :, 6:, :] == -1000).all() and (batch[:, :, :, 10:] == -1000).all()


def test_plan_covers_every_region_pixel_once_with_aligned_boxes():
    hu = phantom_chest()
    region = find_lung_region(hu, SPACING_XYZ[::-1], margin_mm=4.0)
    assert region is not None
    for tile in (None, 600):
        covered = np.zeros(hu.shape, dtype=np.int64)
        for batch in plan_batches(hu.shape, region, batch_size=3, max_tile_pixels=tile):
            row0, row1, col0, col1 = batch.keep
            assert batch.box[0] % 4 == 0 and batch.box[2] % 4 == 0
            assert batch.box[0] <= row0 and batch.box[2] <= col0 and batch.box[1] >= row1 and batch.box[3] >= col1
            assert row0 - batch.box[0] in (row0, HALO) or batch.box[0] == 0
            covered[list(batch.indices), row0:row1, col0:col1] += 1
        wanted = region.full_mask(slice(None), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
        assert (covered[wanted] == 1).all()
        assert covered.max() == 1


def test_lung_boxes_and_tiles_give_the_whole_slice_result_inside_the_region():
    hu = phantom_chest(shape_irc=(12, 64, 64), nodules_irc=((6, 24, 18),))
    region = find_lung_region(hu, SPACING_XYZ[::-1], margin_mm=4.0)
    network = _randomised(UNetConfig(wf=1))
    with torch.no_grad():  # centre the logits so that about half the pixels are set
        sample = context_input(hu, list(range(0, 12, 2)), (0, 64, 0, 64), 3, (-1000.0, 1000.0))
        network.unet.last.bias -= network.unet(network.input_batchnorm(sample)).median()
    model = prepare_for_inference(network, "cpu", "fp32", channels_last=False)
    everything = segment_volume(hu, model, threshold=0.5, batch_size=4)
    assert 0 < everything.sum() < everything.size  # random weights: some pixels each way
    wanted = region.full_mask(slice(None), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    for kwargs in ({"batch_size": 4}, {"batch_size": 2, "max_tile_pixels": 900, "workers": 2}):
        restricted = segment_volume(hu, model, threshold=0.5, region=region, **kwargs)
        assert np.array_equal(restricted, everything & wanted)


def test_threshold_unet_marks_the_bright_nodules():
    hu = phantom_chest()
    model = prepare_for_inference(threshold_unet(), "cpu", "fp32")
    mask = segment_volume(hu, model, batch_size=8)
    assert np.array_equal(mask, hu > 0)


def test_the_region_saves_work_on_a_larger_scan():
    hu = phantom_chest(shape_irc=(30, 160, 160), nodules_irc=())
    for part in (hu[:10], hu[-10:]):  # no lung in the first and last 10 slices
        part[part == -850] = -100
    region = find_lung_region(hu, SPACING_XYZ[::-1], margin_mm=5.0)
    fraction = region_pixel_fraction(hu.shape, region, batch_size=2)
    assert 0.2 < fraction < 0.75
    assert region_pixel_fraction(hu.shape, None, batch_size=2) == 1.0
