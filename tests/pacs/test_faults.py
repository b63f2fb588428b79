"""What goes wrong between ct and a PACS, each answered with one line and the README's exit code:
an unreachable server, a UID it lacks, a non-CT series, a transfer broken half-way, one UID
naming two series, a store refused in a batch. Against a real Orthanc."""

from __future__ import annotations

import socket

import pydicom
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.pacs import fetch
from ct_pipeline.pacs.server import DicomwebServer
from tests.helpers.cli_process import error_line, run_ct, words
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.orthanc_server import REFUSING_STUDY_UID

UID = "1.2.826.0.1.3680043.8.498.7403"
OTHER_UID = "1.2.826.0.1.3680043.8.498.7404"


def _phantom(orthanc, folder, uid=UID, study_uid=None, modality=None):
    write_dicom_series(phantom_chest(), phantom_geometry(), folder, uid, study_uid=study_uid)
    files = sorted(folder.glob("*.dcm"))
    if modality is not None:
        for path in files:
            dataset = pydicom.dcmread(path)
            dataset.Modality = modality
            dataset.save_as(path)
    orthanc.upload(files)
    return files


@pytest.fixture()
def empty(orthanc):
    orthanc.clear()
    return orthanc


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    result = run_ct("info", UID, "--dicomweb", url, "--cache-dir", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: DICOMweb server {url} unreachable while looking up series {UID} (connection refused); "
        "check the URL, the network and that the server runs"
    )


def test_a_uid_the_server_lacks_is_not_found(empty, tmp_path):
    result = run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", tmp_path)
    assert result.exit_code == 2
    assert (
        error_line(result)
        == f"error: series {UID} is neither under the data roots nor on DICOMweb server {empty.dicomweb}"
    )


def test_a_non_ct_series_is_refused_before_it_is_downloaded(empty, tmp_path):
    _phantom(empty, tmp_path / "scan", modality="MR")
    result = run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2
    assert error_line(result) == f"error: series {UID} on {empty.dicomweb} is MR, not CT; give a CT series"
    assert not (tmp_path / "cache" / "dicomweb").exists()


def test_one_uid_naming_series_in_two_studies_is_refused(empty, tmp_path):
    _phantom(empty, tmp_path / "a", study_uid="1.2.826.0.1.3680043.8.498.8001")
    _phantom(empty, tmp_path / "b", study_uid="1.2.826.0.1.3680043.8.498.8002")
    result = run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"error: DICOMweb server {empty.dicomweb} returned instances of 1 series in 2 studies for series {UID} "
        "(1.2.826.0.1.3680043.8.498.8001, 1.2.826.0.1.3680043.8.498.8002); the UID is not unique there"
    )


def test_a_transfer_broken_half_way_leaves_nothing_in_the_cache_and_keeps_an_earlier_copy(empty, tmp_path, monkeypatch):
    import requests

    _phantom(empty, tmp_path / "scan")
    cache = tmp_path / "cache"
    real_save, saved = fetch.save_instance, []

    def breaking(dataset, path):
        if len(saved) == 10:
            raise requests.exceptions.ConnectionError("Connection reset by peer")
        saved.append(path)
        real_save(dataset, path)

    monkeypatch.setattr(fetch, "save_instance", breaking)
    result = run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", cache)
    assert result.exit_code == 2
    assert "unreachable while downloading series" in error_line(result)
    assert list((cache / "dicomweb" / DicomwebServer(empty.dicomweb).key).iterdir()) == []  # no half series
    # A good copy, then the server's series changes and the new transfer breaks: the good copy stays.
    monkeypatch.setattr(fetch, "save_instance", real_save)
    assert run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", cache).exit_code == 0
    folder = fetch.series_folder(DicomwebServer(empty.dicomweb), UID, cache)
    before = sorted(p.name for p in folder.iterdir())
    empty.upload([_extra_slice(tmp_path)])
    saved.clear()
    monkeypatch.setattr(fetch, "save_instance", breaking)
    assert run_ct("info", UID, "--dicomweb", empty.dicomweb, "--cache-dir", cache).exit_code == 2
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in folder.parent.iterdir()] == [UID]


def _extra_slice(tmp_path):
    """One more instance of the series: the first slice under a new instance UID (never read: the transfer breaks first)."""
    first = sorted((tmp_path / "scan").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(first)
    dataset.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.7403.999"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = tmp_path / "extra.dcm"
    dataset.save_as(path)
    return path


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


def test_a_store_refused_in_a_batch_fails_that_series_with_exit_3_and_stores_the_others(empty, models, tmp_path):
    _phantom(empty, tmp_path / "refused", uid=UID, study_uid=REFUSING_STUDY_UID)
    _phantom(empty, tmp_path / "accepted", uid=OTHER_UID)
    (tmp_path / "series.txt").write_text(f"{UID}\n{OTHER_UID}\n")
    out = tmp_path / "objects"
    result = run_ct(
        "diagnose",
        "--series-file",
        tmp_path / "series.txt",
        *models,
        "--dicomweb",
        empty.dicomweb,
        "--dicom-out",
        out,
        "--store",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.exit_code == 3, result.output
    stderr = words(result.stderr)
    assert f"failed {UID}: DICOMweb server {empty.dicomweb} refused {out / UID}.seg.dcm" in stderr
    assert "1 of 2 series failed; the others are done" in stderr
    assert sorted(p.name for p in out.glob("*.dcm")) == sorted(
        [f"{UID}.seg.dcm", f"{UID}.sr.dcm", f"{OTHER_UID}.seg.dcm", f"{OTHER_UID}.sr.dcm"]
    )
    assert sum(line.startswith("stored on ") for line in result.output.splitlines()) == 2
