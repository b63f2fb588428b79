"""`ct diagnose UID --dicomweb URL --dicom-out DIR --store`: the SEG and SR go back to a real Orthanc, once."""

from __future__ import annotations

import pytest
import requests

from ct_pipeline.dicom_writer import write_dicom_series
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models, write_phantom_luna
from tests.helpers.orthanc_server import REFUSING_STUDY_UID

UID = "1.2.826.0.1.3680043.8.498.7402"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = write_models(tmp_path_factory.mktemp("models"), nodule_prob=0.8, malignancy_prob=0.6)
    return [
        "--seg-model",
        paths["seg"],
        "--cls-model",
        paths["cls"],
        "--mal-model",
        paths["mal"],
        "--concurrent-batches",
        "1",
        "-q",
    ]


def _upload_phantom(orthanc, folder, uid=UID, study_uid=None):
    write_dicom_series(phantom_chest(), phantom_geometry(), folder, uid, study_uid=study_uid)
    orthanc.upload(sorted(folder.glob("*.dcm")))


def _derived(orthanc) -> dict[str, list[str]]:
    """SOP instance UIDs of the SEG and SR objects on the server, by modality."""
    found = {}
    for modality in ("SEG", "SR"):
        series = orthanc.series_of_modality(modality)
        found[modality] = sorted(
            i["00080018"]["Value"][0]
            for s in series
            for i in requests.get(
                f"{orthanc.dicomweb}/series/{s['0020000E']['Value'][0]}/instances".replace(
                    "/series/", f"/studies/{s['0020000D']['Value'][0]}/series/"
                ),
                timeout=30,
            ).json()
        )
    return found


def test_store_sends_the_seg_and_sr_once_and_says_what_the_server_accepted(orthanc, models, tmp_path):
    orthanc.clear()
    _upload_phantom(orthanc, tmp_path / "scan")
    args = ["diagnose", UID, *models, "--dicomweb", orthanc.dicomweb, "--dicom-out", tmp_path / "objects", "--store"]
    first = run_ct(*args, "--cache-dir", tmp_path / "cache")
    assert first.exit_code == 0, first.output
    stored = [line for line in first.output.splitlines() if line.startswith("stored on ")]
    assert sorted(line.split(": ")[1].split(" (")[0] for line in stored) == [
        str(tmp_path / "objects" / f"{UID}.seg.dcm"),
        str(tmp_path / "objects" / f"{UID}.sr.dcm"),
    ]
    on_server = _derived(orthanc)
    assert [len(on_server["SEG"]), len(on_server["SR"])] == [1, 1]
    # Again (the files are written anew, with new UIDs): nothing new on the server.
    again = run_ct(*args, "--cache-dir", tmp_path / "cache")
    assert again.exit_code == 0, again.output
    assert sum(line.startswith("already stored on ") for line in again.output.splitlines()) == 2
    assert _derived(orthanc) == on_server


def test_store_needs_dicom_out_and_a_server(models, tmp_path):
    result = run_ct("diagnose", UID, *models, "--store", "--dicomweb", "http://127.0.0.1:9/dicom-web")
    assert result.exit_code == 2
    assert (
        error_line(result) == "error: --store sends the --dicom-out files to the --dicomweb server; give both with it"
    )


def test_a_refused_store_keeps_the_local_files_and_exits_2(orthanc, models, tmp_path):
    orthanc.clear()
    _upload_phantom(orthanc, tmp_path / "scan", study_uid=REFUSING_STUDY_UID)
    out = tmp_path / "objects"
    result = run_ct(
        "diagnose",
        UID,
        *models,
        "--dicomweb",
        orthanc.dicomweb,
        "--dicom-out",
        out,
        "--store",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: DICOMweb server {orthanc.dicomweb} refused {out / UID}.seg.dcm")
    assert sorted(p.name for p in out.iterdir()) == [f"{UID}.seg.dcm", f"{UID}.sr.dcm"]
    assert _derived(orthanc) == {"SEG": [], "SR": []}


def test_store_of_a_series_that_is_not_dicom_says_so_and_the_run_goes_on(orthanc, models, tmp_path):
    orthanc.clear()
    (uid,) = write_phantom_luna(tmp_path / "luna", 1)
    out = tmp_path / "objects"
    result = run_ct(
        "diagnose",
        uid,
        *models,
        "--data-root",
        tmp_path / "luna",
        "--dicomweb",
        orthanc.dicomweb,
        "--dicom-out",
        out,
        "--store",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("--store: ")]
    assert notes == [f"--store: {uid} is not a DICOM series (mhd); nothing to store"]
    assert "--store" not in result.stdout  # a note, not part of the findings table
    assert sorted(p.name for p in out.iterdir()) == [f"{uid}.findings.json", f"{uid}.findings.nrrd"]
    assert _derived(orthanc) == {"SEG": [], "SR": []}
