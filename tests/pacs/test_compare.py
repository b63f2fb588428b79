"""`ct compare PRIOR CURRENT --dicomweb URL`: both scans only on a real Orthanc, both fetched, then compared."""

from __future__ import annotations

import csv
import json

import pytest

from ct_pipeline.models import save_checkpoint
from ct_pipeline.pacs import fetch
from ct_pipeline.pacs.server import DicomwebServer
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import threshold_unet, write_models


@pytest.fixture()
def pair_on_server(orthanc, tmp_path):
    """A `ct synth --dicom --follow-up` pair (the phantom chest has no lungs to register on), uploaded
    to an otherwise empty Orthanc and nowhere else ct is told of; (prior UID, current UID, slices each)."""
    orthanc.clear()
    root = tmp_path / "synth"
    write_synthetic_dataset(SynthConfig(out_dir=root, n_series=1, seed=7, size="small", dicom=True, follow_up=True))
    with open(root / "followup_pairs.csv", encoding="utf-8", newline="") as handle:
        pair = next(csv.DictReader(handle))
    uids = (pair["prior_seriesuid"], pair["current_seriesuid"])
    slices = {}
    for uid in uids:
        files = sorted((root / "dicom" / uid).glob("*.dcm"))
        assert orthanc.upload(files) == len(files)
        slices[uid] = len(files)
    return uids, slices


def test_compare_fetches_both_scans_from_the_server_and_names_both(orthanc, pair_on_server, tmp_path, monkeypatch):
    (prior, current), slices = pair_on_server
    downloads, real = [], fetch._download

    def counting(*args, **kwargs):
        downloads.append(args[2].series_uid)
        return real(*args, **kwargs)

    monkeypatch.setattr(fetch, "_download", counting)
    models = write_models(tmp_path / "models")
    save_checkpoint(models["seg"], threshold_unet(level_hu=5000.0), kind="seg")  # finds nothing: a short run
    cache = tmp_path / "cache"
    result = run_ct(
        "compare",
        prior,
        current,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--dicomweb",
        orthanc.dicomweb,
        "--cache-dir",
        cache,
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert sorted(downloads) == sorted([prior, current])
    server = DicomwebServer(orthanc.dicomweb)
    for uid in (prior, current):
        assert len(list(fetch.series_folder(server, uid, cache).glob("*.dcm"))) == slices[uid]
    compared = json.loads(result.stdout)
    assert [compared["prior"]["series_uid"], compared["current"]["series_uid"]] == [prior, current]
    assert compared["interval_days"] == 70.0 and compared["interval_from"] == "StudyDate"  # from the fetched headers
