"""The per-candidate feature table of a result: every classified candidate before merging, with
what the U-Net and the classifier said about it and the finding that stands for it."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.networks import load_diagnosis_models
from ct_pipeline.diagnosis.pipeline import diagnose
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.diagnosis.result_files import read_result_file, write_result_file
from ct_pipeline.errors import BadDataError
from ct_pipeline.models import save_checkpoint
from ct_pipeline.volume import CtVolume
from tests.helpers.diagnosis_tiny import NODULES_IRC, phantom_chest, phantom_geometry, random_classifier, threshold_unet


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_checkpoint(folder / "seg.ckpt", threshold_unet(), kind="seg")
    save_checkpoint(folder / "cls.ckpt", random_classifier(seed=3), kind="cls")  # another probability per crop
    return load_diagnosis_models(
        folder / "seg.ckpt", folder / "cls.ckpt", None, InferenceOptions(device="cpu", workers=1)
    )


def _diagnose(models, **config) -> DiagnosisResult:
    volume = CtVolume(
        hu=phantom_chest(), geometry=phantom_geometry(), series_uid="1.2.3", source="phantom", format="test"
    )
    return diagnose(volume, models, DiagnosisConfig(lung_margin_mm=8.0, **config))


def test_each_classified_candidate_is_a_row_that_names_its_finding(models, tmp_path):
    result = _diagnose(models)
    table = result.classified
    assert len(table) == result.n_candidates_before_merge == len(result.findings) == 2
    assert sorted(map(tuple, table.crop_center_irc.tolist())) == sorted(NODULES_IRC)
    for row in range(len(table)):
        finding = result.findings[table.finding[row]]
        assert finding.center_irc == tuple(table.crop_center_irc[row])
        assert finding.nodule_prob == table.nodule_prob[row] and finding.score == table.detection_score[row]
        assert finding.diameter_mm == table.diameter_mm[row]
    assert abs(table.nodule_prob[0] - table.nodule_prob[1]) > 1e-4  # the rows are told apart
    # the score is the probability weighed by the U-Net's confidence (weight 0.5)
    np.testing.assert_allclose(table.detection_score, table.nodule_prob * (0.5 + 0.5 * table.confident_fraction))
    assert ((table.confident_fraction > 0.5) & (table.confident_fraction <= 1)).all()
    # the budget ranks by confident fraction x diameter, the best first (ties: the lower index)
    key = table.confident_fraction * table.diameter_mm
    assert key[0] >= key[1] and table.budget_rank.tolist() == [0, 1]
    assert (table.n_voxels > 0).all()

    back = read_result_file(write_result_file(tmp_path, "1.2.3", result)).classified
    for column in ("center_xyz", "diameter_mm"):
        np.testing.assert_allclose(getattr(back, column), getattr(table, column), atol=1e-3)
    for column in ("crop_center_irc", "n_voxels", "budget_rank", "finding", "nodule_prob", "detection_score"):
        np.testing.assert_array_equal(getattr(back, column), getattr(table, column))
    np.testing.assert_array_equal(back.confident_fraction, table.confident_fraction)


def test_merged_candidates_keep_their_rows_and_point_at_the_finding_that_stands_for_them(models):
    result = _diagnose(models, merge_fraction=100.0)  # the two nodules, 40 mm apart, become one finding
    (finding,) = result.findings
    table = result.classified
    assert finding.n_merged == 2 and table.finding.tolist() == [0, 0]
    assert finding.score == table.detection_score.max() and table.detection_score.min() < finding.score


def test_a_budget_leaves_out_the_unclassified_and_book_style_records_no_confidence(models):
    budget = _diagnose(models, max_candidates=1)
    assert budget.n_not_classified == 1 and budget.classified.budget_rank.tolist() == [0]
    book = _diagnose(models, **{"confidence_weight": 0.0, "max_candidates": 0})
    assert book.classified.confident_fraction is None and sorted(book.classified.budget_rank.tolist()) == [0, 1]
    np.testing.assert_array_equal(book.classified.detection_score, book.classified.nodule_prob)
    assert "confident_fraction" in book.to_dict()["classified"]


def test_a_garbled_table_is_refused_and_an_older_result_has_none(models):
    record = _diagnose(models).to_dict()
    assert DiagnosisResult.from_dict({k: v for k, v in record.items() if k != "classified"}).classified is None
    short = {**record, "classified": {**record["classified"], "nodule_prob": [0.5]}}
    with pytest.raises(BadDataError, match="columns differ in length"):
        DiagnosisResult.from_dict(short, where="r.json")
    beyond = {**record, "classified": {**record["classified"], "finding": [0, 7]}}
    with pytest.raises(BadDataError, match="names a finding it does not hold"):
        DiagnosisResult.from_dict(beyond, where="r.json")
