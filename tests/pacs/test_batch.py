"""`ct diagnose --all --dicomweb URL`: a batch over what a query of the server returns, split by --shard."""

from __future__ import annotations

import pydicom
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.pacs.fetch import SeriesQuery
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models

DATED = {  # series UID -> StudyDate
    "1.2.826.0.1.3680043.8.498.7411": "20240315",
    "1.2.826.0.1.3680043.8.498.7412": "20240920",
    "1.2.826.0.1.3680043.8.498.7413": "20230101",  # outside the range asked for
}


def _upload_dated(orthanc, folder, uid, date, modality="CT"):
    write_dicom_series(phantom_chest(), phantom_geometry(), folder, uid, study_uid=uid + ".1")
    files = sorted(folder.glob("*.dcm"))
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.StudyDate, dataset.Modality = date, modality
        dataset.save_as(path)
    orthanc.upload(files)


def test_all_walks_the_query_result_and_two_shards_cover_it_once(orthanc, tmp_path):
    orthanc.clear()
    for uid, date in DATED.items():
        _upload_dated(orthanc, tmp_path / uid, uid, date)
    _upload_dated(orthanc, tmp_path / "mr", "1.2.826.0.1.3680043.8.498.7414", "20240601", modality="MR")
    paths = write_models(tmp_path / "models", nodule_prob=0.8)
    out = tmp_path / "results"
    for shard in ("0/2", "1/2"):
        result = run_ct(
            "diagnose",
            "--all",
            "--dicomweb",
            orthanc.dicomweb,
            "--study-date",
            "20240101-20241231",
            "--seg-model",
            paths["seg"],
            "--cls-model",
            paths["cls"],
            "--concurrent-batches",
            "1",
            "-q",
            "--shard",
            shard,
            "--out",
            out,
            "--cache-dir",
            tmp_path / "cache",
        )
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.json")) == [
        f"{uid}.json" for uid in sorted(DATED) if DATED[uid] >= "2024"
    ]


@pytest.mark.parametrize("text", ["2024-2025", "20240101-2024", "-", "last year"])
def test_a_malformed_study_date_is_bad_input(text):
    result = run_ct("diagnose", "--all", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study-date", text)
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"error: --study-date {text!r} is not a date range; give FROM-TO as YYYYMMDD-YYYYMMDD"
    )


def test_open_ended_ranges_are_accepted():
    assert SeriesQuery(study_date="20240101-").filters == {"Modality": "CT", "StudyDate": "20240101-"}
    assert SeriesQuery(study_date="-20241231").filters["StudyDate"] == "-20241231"
