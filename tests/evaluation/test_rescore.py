"""Re-scoring a diagnosed folder from its per-candidate tables: merged again, evaluated as LUNA16."""

from __future__ import annotations

import numpy as np
import pytest

from ct_pipeline.diagnosis.features import CandidateFeatures
from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.diagnosis.result_files import luna16_rows, write_result_file
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation import FindingTable, evaluate_froc, read_nodules
from ct_pipeline.evaluation.rescore import rescore_folder, rescored_findings

UID = "1.2.3.4"
# One scan, one 8 mm nodule at the origin. Candidates: A on it, D a piece of it 3 mm away, B and
# C false positives the classifier likes more than A but the U-Net is unsure of.
CENTRES = np.array([[0.0, 0, 0], [3, 0, 0], [50, 0, 0], [-50, 0, 0]])  # A, D, B, C
PROB = np.array([0.3, 0.35, 0.9, 0.8])
CONFIDENT = np.array([1.0, 0.0, 0.1, 0.2])


def _result(with_table: bool = True) -> DiagnosisResult:
    """What diagnosis writes for these candidates with the classifier's probability as the score."""
    table = CandidateFeatures(
        center_xyz=CENTRES,
        crop_center_irc=np.rint(CENTRES).astype(np.int64),
        diameter_mm=np.full(4, 8.0),
        n_voxels=np.full(4, 30),
        confident_fraction=CONFIDENT,
        budget_rank=np.arange(4),
        nodule_prob=PROB,
        detection_score=PROB,
        finding=np.array([0, 0, 1, 2]),  # D (0.35) stands for A: 3 mm < 0.75 * 8 mm
    )
    findings = tuple(Finding(tuple(CENTRES[i]), (0, 0, 0), 8.0, float(PROB[i])) for i in (2, 3, 1))
    return DiagnosisResult(
        UID,
        findings,
        provenance={"settings": {"merge_fraction": 0.75}},
        classified=table if with_table else None,
    )


@pytest.fixture()
def folder(tmp_path):
    out = tmp_path / "findings"
    out.mkdir()
    write_result_file(out, UID, _result())
    annotations = tmp_path / "annotations.csv"
    annotations.write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID},0,0,0,8\n")
    return out, annotations


def test_the_runs_own_score_gives_back_its_findings_and_froc(folder):
    out, annotations = folder
    result = _result()
    table = rescored_findings([result], lambda c: c.detection_score)
    rows = luna16_rows([result])
    assert list(table.series_uid) == [row[0] for row in rows]
    np.testing.assert_array_equal(table.center_xyz, [row[1:4] for row in rows])
    np.testing.assert_array_equal(table.probability, [row[4] for row in rows])
    report = rescore_folder(out, annotations, lambda c: c.detection_score)
    expected = evaluate_froc(
        FindingTable.from_arrays(*zip(*[(r[0], r[1:4], r[4]) for r in rows])), read_nodules(annotations)
    )
    assert report.overall.cpm == expected.overall.cpm
    # the nodule's finding comes after both false positives: found from 2 false positives per scan on
    assert report.overall.cpm == pytest.approx(3 / 7)


def test_another_score_merges_again_and_changes_the_cpm(folder):
    out, annotations = folder
    table = rescored_findings([_result()], lambda c: c.nodule_prob * c.confident_fraction)
    # A (0.3) now outranks its piece D (0) and stands for it; B 0.09, C 0.16
    np.testing.assert_array_equal(table.center_xyz, CENTRES[[0, 3, 2]])
    np.testing.assert_allclose(table.probability, [0.3, 0.16, 0.09])
    assert rescore_folder(out, annotations, lambda c: c.nodule_prob * c.confident_fraction).overall.cpm == 1.0
    # without merging, every candidate is a finding
    assert len(rescored_findings([_result()], lambda c: c.nodule_prob, merge_fraction=0.0)) == 4


def test_results_without_a_table_and_bad_scores_are_refused(folder, tmp_path):
    with pytest.raises(BadDataError, match=f"the result of {UID} has no table of classified candidates"):
        rescored_findings([_result(with_table=False)], lambda c: c.nodule_prob)
    with pytest.raises(BadInputError, match=r"gave \(3,\) values for the 4 candidates"):
        rescored_findings([_result()], lambda c: c.nodule_prob[:3])
    with pytest.raises(BadInputError, match="one finite number per candidate"):
        rescored_findings([_result()], lambda c: np.where(c.confident_fraction > 0.5, np.nan, c.nodule_prob))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="holds no diagnosis results"):
        rescore_folder(tmp_path / "empty", folder[1], lambda c: c.nodule_prob)


def test_a_diagnosed_folder_rescored_with_its_own_score_has_the_cpm_of_its_csv(tmp_path):
    from ct_pipeline.evaluation import evaluate_froc_files
    from ct_pipeline.models import save_checkpoint
    from tests.helpers.cli_process import run_ct
    from tests.helpers.diagnosis_tiny import (
        NODULES_IRC,
        phantom_geometry,
        random_classifier,
        threshold_unet,
        write_phantom_luna,
    )

    uids = write_phantom_luna(tmp_path / "luna", 2)
    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(), kind="seg")
    save_checkpoint(tmp_path / "cls.ckpt", random_classifier(seed=3), kind="cls")
    annotations = tmp_path / "annotations.csv"
    rows = [f"{uid},{','.join(map(str, phantom_geometry().irc_to_xyz(NODULES_IRC[0])))},6.4" for uid in uids]
    annotations.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = run_ct(
        "diagnose", "--all", "--data-root", tmp_path / "luna", "--out", out, "--seg-model", tmp_path / "seg.ckpt",
        "--cls-model", tmp_path / "cls.ckpt", "--concurrent-batches", 1, "--merge-fraction", 20,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    own = rescore_folder(out, annotations, lambda c: c.detection_score)
    assert own.overall.cpm == evaluate_froc_files(out / "findings.csv", annotations).overall.cpm
    # a merge fraction of 20 folds each scan's two nodules into one finding: which one stands
    # for them (the nodule annotated or the other) depends on the score
    by_size = rescore_folder(out, annotations, lambda c: c.diameter_mm * (c.crop_center_irc[:, 0] < 12))
    assert by_size.overall.cpm == 1.0
    assert rescore_folder(out, annotations, lambda c: c.diameter_mm * (c.crop_center_irc[:, 0] > 12)).overall.cpm == 0.0
