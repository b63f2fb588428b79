"""The real CPTAC chest CT in ../shared must be read and reported exactly."""

import json

import numpy as np
import SimpleITK as sitk

from ct_pipeline.loading import load_ct
from tests.helpers.cli_process import run_ct

REAL_UID = "1.3.6.1.4.1.14519.5.2.1.7085.2626.242193282649561899185427104083"


def test_real_ct_volume_matches_gdcm_reading(real_dicom_dir):
    volume = load_ct(real_dicom_dir)
    assert volume.series_uid == REAL_UID
    assert volume.shape_irc == (99, 512, 512)
    assert volume.spacing_xyz == (0.564453125, 0.564453125, 3.0)
    assert volume.origin_xyz == (-143.2177734375, -287.2177734375, -288.0)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(real_dicom_dir), REAL_UID))
    image = reader.Execute()
    assert np.array_equal(volume.hu, sitk.GetArrayFromImage(image))
    assert volume.hu.dtype == np.int16 and volume.hu.min() == -1024


def test_ct_info_json_reports_the_real_series_exactly(real_dicom_dir):
    result = run_ct("info", str(real_dicom_dir), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["series_uid"] == REAL_UID
    assert info["format"] == "dicom"
    assert info["modality"] == "CT"
    assert info["shape_irc"] == [99, 512, 512]
    assert info["spacing_xyz"] == [0.564453125, 0.564453125, 3.0]
    assert info["origin_xyz"] == [-143.2177734375, -287.2177734375, -288.0]
    assert info["direction"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_real_series_found_by_uid_under_a_data_root(real_dicom_dir):
    listed = run_ct("series", "list", "--data-root", str(real_dicom_dir.parent), "--json")
    assert listed.exit_code == 0, listed.output
    assert [e["series_uid"] for e in json.loads(listed.stdout)] == [REAL_UID]
    # second time the headers come from the cache; the answer is the same
    info = run_ct("info", REAL_UID, "--data-root", str(real_dicom_dir.parent), "--json")
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["shape_irc"] == [99, 512, 512]
