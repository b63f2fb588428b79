"""``diagnose`` end to end on a phantom with hand-set networks, and the checkpoint errors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.networks import find_newest_checkpoint, load_diagnosis_models, resolve_checkpoint
from ct_pipeline.diagnosis.pipeline import diagnose
from ct_pipeline.errors import BadCheckpointError, BadDataError, BadInputError, NotFoundError
from ct_pipeline.models import save_checkpoint
from ct_pipeline.volume import CtVolume
from tests.helpers.diagnosis_tiny import (
    NODULES_IRC,
    constant_classifier,
    phantom_chest,
    phantom_geometry,
    threshold_unet,
    write_models,
)

# fp32: the hand-set models give exact probabilities that these tests check (bf16 keeps 8 bits).
FAST = InferenceOptions(device="cpu", workers=1, precision="fp32")


def _volume(hu=None, modality="CT") -> CtVolume:
    hu = phantom_chest() if hu is None else hu
    return CtVolume(
        hu=hu, geometry=phantom_geometry(), series_uid="1.2.3.4", source="phantom", format="test", modality=modality
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"), nodule_prob=0.9, malignancy_prob=0.3)


def test_finds_the_phantom_nodules_with_probabilities_and_timings(models_dir):
    models = load_diagnosis_models(models_dir["seg"], models_dir["cls"], models_dir["mal"], FAST)
    result = diagnose(_volume(), models, DiagnosisConfig(lung_margin_mm=8.0))
    assert sorted(f.center_irc for f in result.findings) == sorted(NODULES_IRC)
    geometry = phantom_geometry()
    for finding in result.findings:
        np.testing.assert_allclose(finding.center_xyz, geometry.irc_to_xyz(finding.center_irc), atol=1e-6)
        assert finding.nodule_prob == pytest.approx(0.9, abs=1e-5)
        assert finding.malignancy_prob == pytest.approx(0.3, abs=1e-5)
        assert 5.0 < finding.diameter_mm < 8.0  # spheres of 6.4 mm, voxelised
    assert list(result.timings_s) == [
        "lung_region",
        "segmentation",
        "grouping",
        "classification",
        "merge",
        "malignancy",
    ]
    assert all(t >= 0 for t in result.timings_s.values())
    assert result.region_fraction == 1.0  # the phantom is so small that the U-Net runs on every pixel
    assert result.shape_irc == (24, 64, 64) and result.n_candidates_before_merge == 2


def test_progress_names_every_stage_and_counts_slices_and_crops(models_dir):
    calls = []
    models = load_diagnosis_models(models_dir["seg"], models_dir["cls"], models_dir["mal"], InferenceOptions(workers=2))
    result = diagnose(_volume(), models, DiagnosisConfig(lung_margin_mm=8.0), lambda *call: calls.append(call))
    started = [stage for stage, done, total in calls if done == 0 and total == 0]
    assert started == list(result.timings_s)  # each stage announced once, in order, before it runs
    for stage, expected_total in (("segmentation", None), ("classification", 2), ("malignancy", 2)):
        counts = [(done, total) for name, done, total in calls if name == stage and total > 0]
        assert counts[0][0] == 0 and counts[-1][0] == counts[-1][1]  # from nothing to all of it
        assert [d for d, _ in counts] == sorted(d for d, _ in counts)
        assert expected_total is None or counts[-1][1] == expected_total
    slices = [total for name, _, total in calls if name == "segmentation" and total > 0][0]
    assert 0 < slices <= 24  # the phantom's slices that hold lung


def test_lung_restriction_parallel_workers_and_book_style_agree(models_dir):
    volume = _volume()
    restricted = diagnose(
        volume,
        load_diagnosis_models(
            models_dir["seg"], models_dir["cls"], None, InferenceOptions(workers=2, precision="fp32")
        ),
    )
    book = diagnose(
        volume,
        load_diagnosis_models(models_dir["seg"], models_dir["cls"], None, InferenceOptions.book_style("cpu")),
        DiagnosisConfig.book_style(),
    )
    assert [f.to_dict() for f in restricted.findings] == [f.to_dict() for f in book.findings]
    assert "lung_region" not in book.timings_s and book.region_fraction == 1.0
    assert all(f.malignancy_prob is None for f in book.findings)


def test_malignancy_only_for_findings_at_or_above_the_nodule_threshold(tmp_path):
    paths = write_models(tmp_path, nodule_prob=0.4, malignancy_prob=0.8)
    models = load_diagnosis_models(paths["seg"], paths["cls"], paths["mal"], FAST)
    low = diagnose(_volume(), models, DiagnosisConfig(nodule_threshold=0.5))
    assert len(low.findings) == 2 and all(f.malignancy_prob is None for f in low.findings)
    high = diagnose(_volume(), models, DiagnosisConfig(nodule_threshold=0.3))
    assert all(f.malignancy_prob == pytest.approx(0.8, abs=1e-5) for f in high.findings)


def test_empty_segmentation_gives_no_findings(tmp_path):
    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(level_hu=900.0), kind="seg")
    save_checkpoint(tmp_path / "cls.ckpt", constant_classifier(0.9), kind="cls")
    models = load_diagnosis_models(tmp_path / "seg.ckpt", tmp_path / "cls.ckpt", None, FAST)
    result = diagnose(_volume(), models)
    assert result.findings == () and result.n_candidates_before_merge == 0
    assert "classification" in result.timings_s


def test_scan_smaller_than_the_crop_is_padded(tmp_path):
    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(), kind="seg")
    save_checkpoint(tmp_path / "cls.ckpt", constant_classifier(0.7, crop_shape_irc=(32, 48, 48)), kind="cls")
    models = load_diagnosis_models(tmp_path / "seg.ckpt", tmp_path / "cls.ckpt", None, FAST)
    hu = phantom_chest(shape_irc=(9, 30, 34), nodules_irc=((4, 14, 9),))
    result = diagnose(_volume(hu), models, DiagnosisConfig(restrict_to_lungs=False))
    assert [f.center_irc for f in result.findings] == [(4, 14, 9)]
    assert result.findings[0].nodule_prob == pytest.approx(0.7, abs=1e-5)


def test_a_series_that_is_not_ct_is_refused(models_dir):
    models = load_diagnosis_models(models_dir["seg"], models_dir["cls"], None, FAST)
    with pytest.raises(BadDataError, match="modality 'MR'.*needs a CT series"):
        diagnose(_volume(modality="MR"), models)


def test_a_classifier_given_as_segmentation_model_is_refused(models_dir):
    with pytest.raises(BadCheckpointError, match=r"nodule classifier checkpoint .*--seg-model needs a segmentation"):
        load_diagnosis_models(models_dir["cls"], models_dir["cls"], None, FAST)
    with pytest.raises(BadCheckpointError, match="--mal-model needs a malignancy classifier"):
        load_diagnosis_models(models_dir["seg"], models_dir["cls"], models_dir["cls"], FAST)


def test_classifiers_with_different_crops_are_refused(tmp_path, models_dir):
    save_checkpoint(tmp_path / "mal.ckpt", constant_classifier(0.5, crop_shape_irc=(32, 48, 48)), kind="mal")
    with pytest.raises(BadCheckpointError, match="takes crops of"):
        load_diagnosis_models(models_dir["seg"], models_dir["cls"], tmp_path / "mal.ckpt", FAST)


def test_default_checkpoints_are_the_newest_best_of_each_kind(tmp_path, models_dir):
    runs = tmp_path / "runs"
    old, new = runs / "train-seg" / "best.ckpt", runs / "seg2" / "best.ckpt"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_bytes(models_dir["seg"].read_bytes())
    cls = runs / "train-cls" / "best.ckpt"
    cls.parent.mkdir()
    cls.write_bytes(models_dir["cls"].read_bytes())
    (runs / "train-cls" / "last.ckpt").write_bytes(models_dir["cls"].read_bytes())  # not a "best"
    (runs / "junk").mkdir()
    (runs / "junk" / "best.ckpt").write_bytes(b"not a checkpoint")
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(runs / "junk" / "best.ckpt", (now + 100, now + 100))  # newest, but unreadable: skipped
    assert find_newest_checkpoint(runs, "seg") == new
    assert find_newest_checkpoint(runs, "cls") == cls
    assert find_newest_checkpoint(runs, "mal") is None
    assert resolve_checkpoint(None, "mal", runs, required=False) is None
    with pytest.raises(NotFoundError, match="no malignancy classifier checkpoint found under .*--mal-model"):
        resolve_checkpoint(None, "mal", runs)
    with pytest.raises(NotFoundError, match="--seg-model .*no such file"):
        resolve_checkpoint(tmp_path / "missing.ckpt", "seg", runs)


def test_bad_inference_options_are_refused(models_dir):
    with pytest.raises(BadInputError, match="--precision 'fp8'"):
        InferenceOptions(precision="fp8")
    with pytest.raises(BadInputError, match="fp16 needs a GPU"):
        load_diagnosis_models(
            models_dir["seg"], models_dir["cls"], None, InferenceOptions(device="cpu", precision="fp16")
        )
    with pytest.raises(BadInputError, match="merge fraction -1"):
        DiagnosisConfig(merge_fraction=-1)


def test_the_classifiers_can_run_in_bf16_while_the_unet_stays_fp32(models_dir):
    options = InferenceOptions(device="cpu", workers=1, precision="fp32", classifier_precision="bf16")
    models = load_diagnosis_models(models_dir["seg"], models_dir["cls"], models_dir["mal"], options)
    assert models.precision == {"seg": "fp32", "cls": "bf16", "mal": "bf16"}
    fp32 = diagnose(_volume(), load_diagnosis_models(models_dir["seg"], models_dir["cls"], models_dir["mal"], FAST))
    bf16 = diagnose(_volume(), models)
    assert [f.center_irc for f in bf16.findings] == [f.center_irc for f in fp32.findings]  # the same candidates
    for ours, reference in zip(bf16.findings, fp32.findings):
        assert ours.nodule_prob == pytest.approx(reference.nodule_prob, abs=0.01)  # bf16 keeps 8 bits of mantissa
    with pytest.raises(BadInputError, match="--cls-precision"):
        InferenceOptions(classifier_precision="fp8")


def test_a_candidate_budget_classifies_only_the_best_ranked_and_counts_the_rest(models_dir):
    from ct_pipeline.diagnosis.candidates import budget_order
    from ct_pipeline.diagnosis.pipeline import propose_candidates
    from ct_pipeline.diagnosis.result import DiagnosisResult

    models = load_diagnosis_models(models_dir["seg"], models_dir["cls"], None, FAST)
    config = DiagnosisConfig(lung_margin_mm=8.0, max_candidates=1)
    candidates, _ = propose_candidates(_volume(), models, config)
    best = tuple(int(v) for v in candidates.crop_center_irc[budget_order(candidates)[0]])
    result = diagnose(_volume(), models, config)
    assert [f.center_irc for f in result.findings] == [best]
    assert result.n_candidates_before_merge == 1 and result.n_not_classified == 1
    assert DiagnosisResult.from_dict(result.to_dict()).n_not_classified == 1
    unlimited = diagnose(_volume(), models, DiagnosisConfig(lung_margin_mm=8.0, max_candidates=0))
    assert len(candidates) == len(unlimited.findings) == 2 and unlimited.n_not_classified == 0


def test_a_negative_candidate_budget_is_refused():
    with pytest.raises(BadInputError, match="candidate budget -1 must be a whole number >= 0"):
        DiagnosisConfig(max_candidates=-1)


def _classifier_with_spacing(probability: float, spacing_mm):
    """:func:`constant_classifier` whose model config records a crop spacing."""
    import dataclasses

    model = constant_classifier(probability)
    model.config = dataclasses.replace(model.config, crop_spacing_mm=spacing_mm)
    return model


def test_a_classifier_recording_a_spacing_gets_crops_resampled_through_the_training_function(
    tmp_path, models_dir, monkeypatch
):
    import ct_pipeline.diagnosis.classify as classify
    from ct_pipeline.crops import resampled_crop

    save_checkpoint(tmp_path / "cls.ckpt", _classifier_with_spacing(0.9, (1.0, 0.5, 0.5)), kind="cls")
    save_checkpoint(tmp_path / "mal.ckpt", _classifier_with_spacing(0.3, (1.0, 0.5, 0.5)), kind="mal")
    calls = []

    def spy(array, center_irc, crop_irc, native, spacing, **options):
        calls.append((tuple(np.asarray(center_irc, float)), tuple(native), spacing, crop_irc))
        return resampled_crop(array, center_irc, crop_irc, native, spacing, **options)

    monkeypatch.setattr(classify, "resampled_crop", spy)
    models = load_diagnosis_models(models_dir["seg"], tmp_path / "cls.ckpt", tmp_path / "mal.ckpt", FAST)
    assert models.crop_spacing_mm == (1.0, 0.5, 0.5)
    result = diagnose(_volume(), models, DiagnosisConfig(lung_margin_mm=8.0))
    assert sorted(f.center_irc for f in result.findings) == sorted(NODULES_IRC)
    assert all(f.nodule_prob == pytest.approx(0.9, abs=1e-5) for f in result.findings)
    assert all(f.malignancy_prob == pytest.approx(0.3, abs=1e-5) for f in result.findings)
    # every crop (nodule and malignancy) at the checkpoint's spacing, from the phantom's 2.0 x 0.8 x 0.8 mm
    assert calls and {(native, spacing) for _, native, spacing, _ in calls} == {((2.0, 0.8, 0.8), (1.0, 0.5, 0.5))}
    assert {tuple(int(v) for v in center) for center, *_ in calls} >= set(NODULES_IRC)
    # native checkpoints: the rounded-voxel crop, no spacing
    calls.clear()
    diagnose(_volume(), load_diagnosis_models(models_dir["seg"], models_dir["cls"], None, FAST), DiagnosisConfig())
    assert calls and all(spacing is None and center == tuple(np.rint(center)) for center, _, spacing, _ in calls)


def test_classifiers_at_different_spacings_are_refused(tmp_path, models_dir):
    save_checkpoint(tmp_path / "cls.ckpt", _classifier_with_spacing(0.9, (1.0, 0.5, 0.5)), kind="cls")
    with pytest.raises(
        BadCheckpointError,
        match=r"takes crops at native voxels but .* at 1 x 0\.5 x 0\.5 mm \(z, y, x\); use a malignancy",
    ):
        load_diagnosis_models(models_dir["seg"], tmp_path / "cls.ckpt", models_dir["mal"], FAST)


def test_a_checkpoint_from_before_crop_spacings_loads_as_native(tmp_path, models_dir):
    import torch

    data = torch.load(models_dir["cls"], weights_only=True)
    del data["model_config"]["crop_spacing_mm"]
    torch.save(data, tmp_path / "old.ckpt")
    models = load_diagnosis_models(models_dir["seg"], tmp_path / "old.ckpt", None, FAST)
    assert models.crop_spacing_mm is None
