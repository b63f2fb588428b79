"""The networks: the book's weights reproduce the book's outputs; fast inference stays close.

The book's reference outputs were computed with fp32 on an AVX-512 CPU. Another CPU's kernels
(AVX2, SSE, ARM) sum each convolution in another order, and fp32 rounding then differs in the
last digits, so these checks hold on every CPU torch supports (`make test` also runs them
with ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default, see the Makefile).
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from ct_pipeline.models import (
    ClassifierConfig,
    LunaClassifier,
    SegmentationUNet,
    UNetConfig,
    count_parameters,
    prepare_for_inference,
)

SEG_STATE = "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS_STATE = "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"

pytestmark = pytest.mark.numeric

# How far two correct fp32 evaluations may differ. Reordering a sum of n fp32 terms moves it by up
# to ~n * 2**-24 of the terms' magnitude; the U-Net's 15 layers of up to 576-term sums and its
# sigmoid turn that into differences of up to 1.5e-4 in a probability (measured: AVX-512 vs
# SSE4.1/default kernels 1.4e-4, float64 vs fp32 1.5e-4), the classifier's 10 layers into 1e-5
# in logits of magnitude ~7. The bounds leave about 7-10x for kernels not measured here.
SEG_PROBABILITY_ATOL = 1e-3
CLS_LOGIT_ATOL = 1e-4
CLS_PROBABILITY_ATOL = 1e-5


def _book_model(book_weights_dir, name, model):
    state = torch.load(book_weights_dir / name, weights_only=True, map_location="cpu")["model_state"]
    result = model.load_state_dict(state)  # strict: no renaming of the book's keys
    assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


@pytest.fixture(scope="module")
def reference(book_weights_dir):
    return dict(np.load(book_weights_dir / "reference_outputs.npz"))


@pytest.fixture(scope="module")
def book_unet(book_weights_dir):
    return _book_model(book_weights_dir, SEG_STATE, SegmentationUNet())


@pytest.fixture(scope="module")
def book_classifier(book_weights_dir):
    return _book_model(book_weights_dir, CLS_STATE, LunaClassifier())


def test_unet_reproduces_the_books_output(book_unet, reference):
    with torch.inference_mode():
        output = book_unet(torch.from_numpy(reference["seg_input"]))
    assert output.shape == (2, 1, 512, 512) and output.dtype == torch.float32
    probability, expected = output[:, 0].numpy(), reference["seg_output"]
    np.testing.assert_allclose(probability, expected, rtol=0, atol=SEG_PROBABILITY_ATOL)
    # What a user sees: the thresholded mask. A pixel may change side of 0.5 only if the
    # reference puts it within the tolerance of 0.5, and the mask's blobs (the candidates) stay.
    flipped = (probability > 0.5) != (expected > 0.5)
    assert not (flipped & (np.abs(expected - 0.5) > SEG_PROBABILITY_ATOL)).any()
    assert expected.max() > 0.5 and (expected > 0.5).sum() > 1000  # the reference has a real mask to compare
    for ours, book in zip(probability > 0.5, expected > 0.5):
        ours_labels, n_ours = ndimage.label(ours)
        book_labels, n_book = ndimage.label(book)
        assert n_ours == n_book
        centres = np.asarray(ndimage.center_of_mass(ours, ours_labels, range(1, n_ours + 1)))
        book_centres = np.asarray(ndimage.center_of_mass(book, book_labels, range(1, n_book + 1)))
        np.testing.assert_allclose(centres, book_centres, atol=0.5)  # pixels


def test_classifier_reproduces_the_books_output(book_classifier, reference):
    with torch.inference_mode():
        logits, probability = book_classifier(torch.from_numpy(reference["cls_input"]))
    np.testing.assert_allclose(logits.numpy(), reference["cls_logits"], rtol=0, atol=CLS_LOGIT_ATOL)
    np.testing.assert_allclose(probability.numpy(), reference["cls_probability"], rtol=0, atol=CLS_PROBABILITY_ATOL)
    np.testing.assert_allclose(probability.sum(dim=1).numpy(), 1.0, atol=1e-6)
    assert (probability.argmax(1).numpy() == reference["cls_probability"].argmax(1)).all()


def test_channels_last_fp32_matches(book_unet, book_classifier, reference):
    unet = prepare_for_inference(book_unet, "cpu", "fp32", channels_last=True)
    seg = unet(torch.from_numpy(reference["seg_input"]))[:, 0].numpy()
    assert np.abs(seg - reference["seg_output"]).max() < 1e-3  # measured 7.6e-5
    classifier = prepare_for_inference(book_classifier, "cpu", "fp32", channels_last=True)
    _, probability = classifier(torch.from_numpy(reference["cls_input"]))
    assert np.abs(probability.numpy() - reference["cls_probability"]).max() < 1e-5


def test_bf16_channels_last_is_close(book_unet, book_classifier, reference):
    unet = prepare_for_inference(book_unet, "cpu", "bf16", channels_last=True)
    assert unet.precision == "bf16" and unet.channels_last
    seg = unet(torch.from_numpy(reference["seg_input"]))[:, 0].numpy()
    assert seg.dtype == np.float32
    diff = np.abs(seg - reference["seg_output"])
    # Measured: mean 1.5e-4; 135 of 524,288 pixels (0.03%) off by > 0.1, all on mask borders.
    assert diff.mean() < 1e-3
    assert (diff > 0.1).mean() < 1e-3
    mask, reference_mask = seg > 0.5, reference["seg_output"] > 0.5
    assert (mask != reference_mask).sum() < 0.02 * reference_mask.sum()  # measured 91 of 10,638

    classifier = prepare_for_inference(book_classifier, "cpu", "bf16", channels_last=True)
    logits, probability = classifier(torch.from_numpy(reference["cls_input"]))
    assert np.abs(logits.numpy() - reference["cls_logits"]).max() < 0.2  # measured 0.047
    assert np.abs(probability.numpy() - reference["cls_probability"]).max() < 5e-3  # measured 8.9e-4
    assert (probability.argmax(1).numpy() == reference["cls_probability"].argmax(1)).all()


def test_prepare_for_inference_defaults_and_errors():
    unet = prepare_for_inference(SegmentationUNet(), "cpu", "fp32")
    assert unet.channels_last and not unet.model.training
    assert unet.model.unet.last.weight.is_contiguous(memory_format=torch.channels_last)
    classifier = prepare_for_inference(LunaClassifier(), "cpu", "fp32")
    assert classifier.channels_last
    assert classifier.model.block1.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not prepare_for_inference(LunaClassifier(), "cpu", "fp32", channels_last=False).channels_last
    with pytest.raises(ValueError, match="fp16 autocast is for GPUs"):
        prepare_for_inference(LunaClassifier(), "cpu", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(LunaClassifier(), "cpu", "int8")


def test_fresh_models_shapes_and_parameter_counts():
    torch.manual_seed(0)
    unet = SegmentationUNet().eval()
    with torch.inference_mode():
        output = unet(torch.randn(2, 7, 64, 96) * 500)
    assert output.shape == (2, 1, 64, 96) and 0 <= output.min() and output.max() <= 1
    assert count_parameters(unet) == 118_271
    classifier = LunaClassifier().eval()
    assert classifier.head_linear.in_features == 1152
    with torch.inference_mode():
        logits, probability = classifier(torch.randn(3, 1, 32, 48, 48))
    assert logits.shape == probability.shape == (3, 2)
    assert count_parameters(classifier) == 222_220


def test_block_batchnorm_adds_a_norm_per_convolution_and_keeps_the_books_names():
    plain = set(LunaClassifier().state_dict())
    normed = LunaClassifier(ClassifierConfig(block_batchnorm=True))
    added = set(normed.state_dict()) - plain
    # bn1/bn2 in each of the 4 blocks: weight, bias, running mean/var, batch count
    assert len(added) == 4 * 2 * 5 and all(".bn1." in k or ".bn2." in k for k in added)
    assert plain <= set(normed.state_dict())  # the book's parameters keep their names and shapes
    # 2 * (8 + 16 + 32 + 64) channels, a weight and a bias each
    assert count_parameters(normed) == 222_220 + 2 * 2 * (8 + 16 + 32 + 64)
    normed.eval()
    with torch.inference_mode():
        logits, _ = normed(torch.randn(2, 1, 32, 48, 48) * 500)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_centre_head_feeds_the_cells_at_the_crop_centre_to_the_head():
    model = LunaClassifier(ClassifierConfig(centre_head=True)).eval()
    assert model.head_linear.in_features == 1152 + 16 * 8 + 32 * 8
    assert set(LunaClassifier().state_dict()) == set(model.state_dict())  # same names, a wider head
    # The head's extra inputs change with the crop's centre, and not with its corner, beyond
    # what the book's head sees: probe it with the head's own input.
    features = {}
    model.head_linear.register_forward_hook(lambda module, args, out: features.setdefault("x", args[0]))
    crop = torch.full((1, 1, 32, 48, 48), -800.0)
    with torch.inference_mode():
        model(crop)
        plain = features.pop("x")
        centre = crop.clone()
        centre[..., 15:17, 23:25, 23:25] = 40.0  # a 2-voxel blob on the crop's centre voxel (16, 24, 24)
        model(centre)
        with_blob = features.pop("x")
    extra = slice(1152, None)
    assert not torch.allclose(with_blob[:, extra], plain[:, extra])
    with torch.inference_mode():
        corner = crop.clone()
        corner[..., 0:2, 0:2, 0:2] = 40.0
        model(corner)
        with_corner = features.pop("x")
    assert torch.equal(with_corner[:, extra], plain[:, extra])  # blocks 2-3 centre cells do not reach the corner


def test_unpadded_unet_crops_the_skip_connections():
    config = UNetConfig(in_channels=3, depth=2, wf=2, padding=False, batch_norm=False, up_mode="upsample")
    with torch.inference_mode():
        output = SegmentationUNet(config).eval()(torch.randn(1, 3, 44, 44))
    # 44 -4-> 40 -pool-> 20 -4-> 16 -up-> 32 -4-> 28
    assert output.shape == (1, 1, 28, 28)


def test_book_initialisation_statistics():
    torch.manual_seed(0)
    conv = LunaClassifier().block4.conv2  # 64 x 64 x 3x3x3
    fan_out = 64 * 27
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)  # kaiming, fan_out
    # The book's normal_(bias, -bound, bound): mean -bound, std bound (not a uniform draw).
    bound = 1 / fan_out**0.5
    assert conv.bias.mean().item() < -bound / 3
    assert conv.bias.min().item() < -bound - 1e-6  # outside [-bound, bound]: proof it is not uniform


def test_a_fresh_unet_starts_with_unsaturated_outputs():
    # With the book's fan-out rule on the 1x1 output convolution a third of the pixels start
    # saturated (no Dice gradient there); the fresh model must start near probability 0.5.
    torch.manual_seed(0)
    unet = SegmentationUNet().train()
    with torch.no_grad():
        probability = unet(torch.randn(8, 7, 64, 64) * 300 - 500)
    saturated = ((probability < 0.01) | (probability > 0.99)).float().mean().item()
    assert saturated < 0.01
    assert 0.2 < probability.mean().item() < 0.8


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(crop_shape_irc=(30, 48, 48)), "divisible by 16"),
        (dict(n_classes=1), "n_classes >= 2"),
    ],
)
def test_classifier_config_is_validated(config, message):
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(**config)


def test_unet_config_is_validated():
    with pytest.raises(ValueError, match="up_mode"):
        UNetConfig(up_mode="nearest")
    assert ClassifierConfig(crop_shape_irc=[16, 32, 64]).head_features == 64 * 1 * 2 * 4
