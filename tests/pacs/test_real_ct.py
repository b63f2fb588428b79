"""The real 99-slice CPTAC chest CT through a real Orthanc: diagnosed by UID over DICOMweb with the
book's weights, its SEG and SR stored back, and what the server then holds checked with highdicom."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ct_pipeline.models import import_book_checkpoint
from ct_pipeline.pacs.server import DicomwebServer, open_client
from tests.diagnosis.test_real_ct import CLS_STATE, SEG_STATE
from tests.helpers.cli_process import run_ct

REAL_UID = "1.3.6.1.4.1.14519.5.2.1.7085.2626.242193282649561899185427104083"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book_models(book_weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    import_book_checkpoint(book_weights_dir / SEG_STATE, "seg", out / "seg.ckpt")
    import_book_checkpoint(book_weights_dir / CLS_STATE, "cls", out / "cls.ckpt")
    return ["--seg-model", out / "seg.ckpt", "--cls-model", out / "cls.ckpt", "--runs-dir", out / "no-runs"]


def _instances(client, modality: str) -> list:
    """Every instance of ``modality`` on the server, retrieved (WADO-RS) as pydicom datasets."""
    found = []
    for series in client.search_for_series(search_filters={"Modality": modality}):
        study_uid, series_uid = series["0020000D"]["Value"][0], series["0020000E"]["Value"][0]
        found += list(client.iter_series(study_uid, series_uid))
    return found


def test_the_real_ct_diagnosed_by_uid_over_dicomweb_stores_a_seg_equal_to_the_local_one(
    orthanc, real_dicom_dir, book_models, tmp_path
):
    import highdicom as hd
    import pydicom

    orthanc.clear()
    assert orthanc.upload(sorted(real_dicom_dir.glob("*.dcm"))) == 99
    local = run_ct("diagnose", real_dicom_dir, *book_models, "--dicom-out", tmp_path / "local", "--json", "-q")
    assert local.exit_code == 0, local.output
    remote = run_ct(
        "diagnose",
        REAL_UID,
        *book_models,
        "--dicomweb",
        orthanc.dicomweb,
        "--dicom-out",
        tmp_path / "remote",
        "--store",
        "--json",
        "-q",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert remote.exit_code == 0, remote.output
    local_record, remote_record = (json.loads(r.stdout.splitlines()[0]) for r in (local, remote))
    assert [c["center_irc"] for c in remote_record["candidates"]] == [
        c["center_irc"] for c in local_record["candidates"]
    ]
    assert sum(line.startswith("stored on ") for line in remote.stderr.splitlines()) == 2

    client = open_client(DicomwebServer(orthanc.dicomweb))
    (seg_dataset,), (sr_dataset,) = _instances(client, "SEG"), _instances(client, "SR")
    seg = hd.seg.Segmentation.from_dataset(seg_dataset)
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {REAL_UID}
    local_seg = pydicom.dcmread(tmp_path / "local" / f"{REAL_UID}.seg.dcm")
    assert seg.number_of_segments == len(local_seg.SegmentSequence) >= 1
    np.testing.assert_array_equal(seg.pixel_array, local_seg.pixel_array)
    referenced_frames = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    local_frames = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in local_seg.PerFrameFunctionalGroupsSequence
    ]
    assert referenced_frames == local_frames
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_dataset)
    evidence = {
        s.SeriesInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    }
    assert REAL_UID in evidence and seg_dataset.SeriesInstanceUID in evidence
