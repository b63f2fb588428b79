"""`ct synth --dicom`: every series reads back from DICOM as the same array and geometry as its .mhd."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.loading.mhd import load_mhd
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset


@pytest.fixture(scope="module")
def dicom_dataset(tmp_path_factory):
    # Two series: one oblique, one with two axes flipped.
    config = SynthConfig(
        out_dir=tmp_path_factory.mktemp("synth_dicom") / "data",
        n_series=2,
        seed=9,
        size="small",
        dicom=True,
        oblique_fraction=0.5,
        flip_fraction=0.5,
    )
    return config, write_synthetic_dataset(config)


def test_dicom_matches_mhd(dicom_dataset):
    config, result = dicom_dataset
    assert sorted(s.direction_kind for s in result.series) == ["flipped", "oblique"]
    # Only finished series folders, no hidden partial ones.
    assert sorted(p.name for p in (config.out_dir / "dicom").iterdir()) == sorted(s.series_uid for s in result.series)
    for summary in result.series:
        uid = summary.series_uid
        folder = config.out_dir / "dicom" / uid
        reader = sitk.ImageSeriesReader()
        assert reader.GetGDCMSeriesIDs(str(folder)) == (uid,)
        files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        assert len(files) == summary.shape_irc[0]
        reader.SetFileNames(files)
        image = reader.Execute()
        mhd = load_mhd(config.out_dir / "subset0" / f"{uid}.mhd")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mhd.hu)
        np.testing.assert_allclose(image.GetOrigin(), mhd.geometry.origin_xyz, atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), mhd.geometry.spacing_xyz, atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), mhd.geometry.direction, atol=1e-4)


def test_dicom_tags(dicom_dataset):
    config, result = dicom_dataset
    uid = result.series[0].series_uid
    first = sorted((config.out_dir / "dicom" / uid).glob("*.dcm"))[0]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(first))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0008|0060").strip() == "CT"
    assert reader.GetMetaData("0020|000e").strip() == uid
    assert reader.GetMetaData("0010|0020").strip() == "SYNTH-9-1"
    assert reader.GetMetaData("0008|0020").strip() == "20000101"
