"""Test-time flips: the classifiers' probability is the mean over mirrored copies of each crop,
computed in one forward pass per batch, and a result records how many copies made it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from ct_pipeline.diagnosis.classify import classify_crops, extract_crop
from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.diagnosis.provenance import differences, run_provenance, settings_key
from ct_pipeline.errors import BadInputError

CROP = (4, 6, 6)
HU_RANGE = (-1000.0, 1000.0)
SCALE = 1e4
# The mirrors each flip count must average over, as axes of an (index, row, col) crop: 2 mirrors
# along col, 4 every in-plane mirror, 8 every mirror (the order of a set does not change its mean).
MIRRORS = {
    1: [()],
    2: [(), (2,)],
    4: [axes for n in range(3) for axes in itertools.combinations((1, 2), n)],
    8: [axes for n in range(4) for axes in itertools.combinations((0, 1, 2), n)],
}


class WeightedSum(nn.Module):
    """A classifier whose positive logit is ``2 * sum(crop * weight) / SCALE``: probability
    ``sigmoid(2 * sum(crop * weight) / SCALE)``, which a mirror changes unless ``weight`` is symmetric."""

    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self.weight = torch.from_numpy(weight.astype(np.float32))
        self.calls: list[int] = []

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(batch.shape[0])
        z = (batch[:, 0] * self.weight).sum(dim=(1, 2, 3)) / SCALE
        logits = torch.stack([-z, z], dim=1)
        return logits, logits.softmax(dim=1)


def _volume_and_centres() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 1000, size=(12, 16, 16)).astype(np.int16)
    centres = rng.integers(0, 12, size=(7, 3))
    centres[3] = centres[1]  # a shared centre: one crop, the same probability
    return hu, centres


def _by_hand(hu: np.ndarray, centres: np.ndarray, weight: np.ndarray, flips: int) -> np.ndarray:
    """The mean over ``MIRRORS[flips]`` of each crop's probability, in float64 numpy."""
    means = []
    for centre in centres:
        crop = extract_crop(hu, centre, CROP, HU_RANGE).astype(np.float64)
        probabilities = [
            1.0 / (1.0 + np.exp(-2.0 * (np.flip(crop, axes) * weight).sum() / SCALE)) for axes in MIRRORS[flips]
        ]
        means.append(np.mean(probabilities))
    return np.array(means)


@pytest.mark.parametrize("flips", [1, 2, 4, 8])
def test_the_probability_is_the_mean_of_the_mirrored_forwards_computed_by_hand(flips):
    hu, centres = _volume_and_centres()
    weight = np.random.default_rng(4).normal(size=CROP)
    model = WeightedSum(weight)
    got = classify_crops(hu, centres, model, CROP, hu_range=HU_RANGE, batch_size=4, flips=flips)
    np.testing.assert_allclose(got, _by_hand(hu, centres, weight, flips), rtol=0, atol=2e-6)
    assert got[3] == got[1]
    # One forward pass per batch of (up to) 4 distinct crops, with its copies: 5 crops -> 4 + 1.
    assert len(np.unique(centres, axis=0)) == 5
    assert model.calls == [4 * flips, 1 * flips]


def test_an_asymmetric_classifier_gives_other_probabilities_with_flips():
    hu, centres = _volume_and_centres()
    model = WeightedSum(np.random.default_rng(4).normal(size=CROP))
    plain = classify_crops(hu, centres, model, CROP, hu_range=HU_RANGE)
    flipped = classify_crops(hu, centres, model, CROP, hu_range=HU_RANGE, flips=8)
    assert np.abs(flipped - plain).max() > 0.05  # the test above is not comparing equal things


def test_a_mirror_symmetric_classifier_gives_the_same_probabilities_with_any_flips():
    hu, centres = _volume_and_centres()
    rng = np.random.default_rng(5)
    # Symmetric along every axis: each axis' profile reads the same backwards.
    profiles = [rng.normal(size=n) for n in CROP]
    profiles = [p + p[::-1] for p in profiles]
    weight = np.einsum("i,r,c->irc", *profiles)
    model = WeightedSum(weight)
    plain = classify_crops(hu, centres, model, CROP, hu_range=HU_RANGE)
    assert plain.std() > 0.05  # the probabilities are not all alike
    for flips in (2, 4, 8):
        flipped = classify_crops(hu, centres, model, CROP, hu_range=HU_RANGE, flips=flips)
        np.testing.assert_allclose(flipped, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flips", [0, 3, 16])
def test_other_flip_counts_are_refused(flips):
    with pytest.raises(BadInputError, match=f"DiagnosisConfig.classifier_flips {flips} is not one of 1, 2, 4, 8"):
        DiagnosisConfig(classifier_flips=flips)
    hu, centres = _volume_and_centres()
    with pytest.raises(BadInputError, match=f"{flips} test-time flips"):
        classify_crops(hu, centres, WeightedSum(np.ones(CROP)), CROP, flips=flips)


def test_flips_are_recorded_and_a_result_made_with_other_flips_is_no_repeat(tmp_path):
    for kind in ("seg", "cls"):
        (tmp_path / f"{kind}.ckpt").write_bytes(kind.encode())
    paths = {kind: str(tmp_path / f"{kind}.ckpt") for kind in ("seg", "cls")}

    def record(config: DiagnosisConfig) -> dict:
        return run_provenance(paths, {"seg": "fp32", "cls": "fp32"}, config, "cpu")

    off, four = record(DiagnosisConfig()), record(DiagnosisConfig(classifier_flips=4))
    assert off["settings"]["classifier_flips"] == 1 and four["settings"]["classifier_flips"] == 4
    assert differences(off, four, source=False) == ["classifier_flips"]
    assert settings_key(off) != settings_key(four)
    # A record written before the setting existed was made without flips: a repeat of 1, not of 4.
    older = {**off, "settings": {k: v for k, v in off["settings"].items() if k != "classifier_flips"}}
    assert differences(older, off, source=False) == []
    assert settings_key(older) == settings_key(off)
    assert differences(older, four, source=False) == ["classifier_flips"]
    assert DiagnosisConfig.book_style().classifier_flips == 1
