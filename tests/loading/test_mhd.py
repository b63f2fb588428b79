import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading import load_ct
from ct_pipeline.loading.mhd import load_mhd, write_mhd

OBLIQUE = Geometry(
    origin_xyz=(-150.5, -170.25, -310.0),
    spacing_xyz=(0.7, 0.7, 1.25),
    direction=tuple(np.array([[0.9961947, -0.0871557, 0.0], [0.0871557, 0.9961947, 0.0], [0.0, 0.0, 1.0]]).ravel()),
)


@pytest.fixture()
def mhd_file(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(9, 11, 13), dtype=np.int16)
    path = tmp_path / "1.2.3.4.mhd"
    write_mhd(hu, OBLIQUE, path)
    return path, hu


def test_write_then_load_round_trips_pixels_and_geometry(mhd_file):
    path, hu = mhd_file
    volume = load_mhd(path)
    assert volume.series_uid == "1.2.3.4"
    assert volume.shape_irc == (9, 11, 13)
    assert np.array_equal(volume.hu, hu)
    assert np.allclose(volume.geometry.direction, OBLIQUE.direction)


def test_loader_agrees_with_simpleitk_on_the_same_file(mhd_file):
    path, _ = mhd_file
    image = sitk.ReadImage(str(path))
    volume = load_ct(path)
    assert np.array_equal(volume.hu, sitk.GetArrayFromImage(image))
    assert np.allclose(volume.origin_xyz, image.GetOrigin())
    assert np.allclose(volume.spacing_xyz, image.GetSpacing())
    assert np.allclose(volume.direction, image.GetDirection())


def test_truncated_raw_names_file_and_both_sizes(mhd_file):
    path, _ = mhd_file
    raw = path.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(BadDataError, match=r"1\.2\.3\.4\.raw: 1000 bytes, but .* needs 2574.*truncated"):
        load_mhd(path)


def test_header_element_type_disagreeing_with_raw_size(mhd_file):
    path, _ = mhd_file
    path.write_text(path.read_text().replace("MET_SHORT", "MET_FLOAT"))
    with pytest.raises(BadDataError, match="MET_FLOAT.*needs 5148"):
        load_mhd(path)


def test_unsupported_element_type_is_named(mhd_file):
    path, _ = mhd_file
    path.write_text(path.read_text().replace("MET_SHORT", "MET_LONG_LONG"))
    with pytest.raises(BadDataError, match="ElementType 'MET_LONG_LONG' is not supported"):
        load_mhd(path)


def test_nrrd_and_nifti_files_load_with_geometry(tmp_path, mhd_file):
    path, hu = mhd_file
    image = sitk.ReadImage(str(path))
    for name in ("scan.nrrd", "scan.nii.gz"):
        out = tmp_path / name
        sitk.WriteImage(image, str(out))
        volume = load_ct(out)
        assert volume.series_uid == "scan"
        assert np.array_equal(volume.hu, hu)
        assert np.allclose(volume.spacing_xyz, OBLIQUE.spacing_xyz, atol=1e-5)
