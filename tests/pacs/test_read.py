"""`--dicomweb URL`: a series UID not under the data roots is read from a real Orthanc, fetched once."""

from __future__ import annotations

import json

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.pacs import fetch
from ct_pipeline.pacs.server import DicomwebServer
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import SHAPE_IRC, phantom_chest, phantom_geometry

UID = "1.2.826.0.1.3680043.8.498.7401"


@pytest.fixture()
def on_server(orthanc, tmp_path):
    """The phantom chest as a DICOM series, uploaded to an otherwise empty Orthanc; its files."""
    orthanc.clear()
    write_dicom_series(phantom_chest(), phantom_geometry(), tmp_path / "scan", UID)
    files = sorted((tmp_path / "scan").glob("*.dcm"))
    assert orthanc.upload(files) == SHAPE_IRC[0]
    return files


@pytest.fixture()
def downloads(monkeypatch):
    """Counts WADO-RS downloads."""
    calls = []
    real = fetch._download

    def counting(*args, **kwargs):
        calls.append(args[2].series_uid)
        return real(*args, **kwargs)

    monkeypatch.setattr(fetch, "_download", counting)
    return calls


def test_info_reads_a_series_from_the_server_and_a_second_run_does_not_fetch_it_again(
    orthanc, on_server, downloads, tmp_path
):
    cache = tmp_path / "cache"
    for _ in range(2):
        result = run_ct("info", UID, "--dicomweb", orthanc.dicomweb, "--cache-dir", cache, "--json")
        assert result.exit_code == 0, result.output
        described = json.loads(result.stdout)
        assert described["shape_irc"] == list(SHAPE_IRC)
    assert downloads == [UID]
    folder = fetch.series_folder(DicomwebServer(orthanc.dicomweb), UID, cache)
    assert len(list(folder.glob("*.dcm"))) == SHAPE_IRC[0]
    assert [p.name for p in folder.parent.iterdir()] == [UID]  # no staging folder left behind


def test_the_env_variable_names_the_server_and_a_changed_series_is_fetched_again(
    orthanc, on_server, downloads, tmp_path, monkeypatch
):
    import requests

    monkeypatch.setenv("CT_DICOMWEB", orthanc.dicomweb)
    cache = tmp_path / "cache"
    assert run_ct("info", UID, "--cache-dir", cache, "--json").exit_code == 0
    # The top slice removed on the server: the cached copy is out of date.
    last = requests.post(
        orthanc.url + "/tools/find",
        json={"Level": "Instance", "Query": {"SeriesInstanceUID": UID, "InstanceNumber": str(SHAPE_IRC[0])}},
        timeout=30,
    ).json()
    assert len(last) == 1
    requests.delete(f"{orthanc.url}/instances/{last[0]}", timeout=30).raise_for_status()
    result = run_ct("info", UID, "--cache-dir", cache, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shape_irc"][0] == SHAPE_IRC[0] - 1
    assert downloads == [UID, UID]


def test_a_uid_on_disk_is_read_from_disk_without_asking_the_server(on_server, downloads, tmp_path):
    result = run_ct(
        "info", UID, "--data-root", on_server[0].parent, "--dicomweb", "http://127.0.0.1:9/dicom-web", "--json"
    )
    assert result.exit_code == 0, result.output
    assert downloads == []


def test_series_list_shows_the_servers_ct_series_beside_the_data_roots(orthanc, on_server, tmp_path):
    result = run_ct("series", "list", "--dicomweb", orthanc.dicomweb, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(e["series_uid"], e["format"], e["n_files"], e["path"]) for e in listed] == [
        (UID, "dicomweb", SHAPE_IRC[0], orthanc.dicomweb)
    ]
    # On disk too: listed once, as the disk's copy.
    result = run_ct("series", "list", "--data-root", on_server[0].parent, "--dicomweb", orthanc.dicomweb, "--json")
    assert [(e["series_uid"], e["format"]) for e in json.loads(result.stdout)] == [(UID, "dicom")]


def test_prepcache_fetches_a_named_series_from_the_server(orthanc, on_server, downloads, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "candidates.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,class\n{UID},0.0,0.0,-80.0,1\n{UID},5.0,5.0,-80.0,0\n"
    )
    result = run_ct(
        "prepcache",
        "--data-root",
        tables,
        "--series",
        UID,
        "--dicomweb",
        orthanc.dicomweb,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.exit_code == 0, result.output
    assert "1 filled" in result.output
    assert downloads == [UID]


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_without_orthanc_the_pacs_tests_fail_under_ci_and_skip_elsewhere(ci, outcome, monkeypatch, tmp_path):
    from tests.helpers import orthanc_server

    monkeypatch.setattr(orthanc_server, "dicomweb_plugin", lambda: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="Orthanc or its DICOMweb plugin is not installed"):
        with orthanc_server.running_orthanc(tmp_path):
            pass
