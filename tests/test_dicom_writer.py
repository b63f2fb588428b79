"""write_dicom_series: the files read back with SimpleITK to the same HU and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.dicom_writer import derived_uid, write_dicom_series
from ct_pipeline.errors import BadInputError
from ct_pipeline.geometry import Geometry
from ct_pipeline.paths import is_series_uid

SERIES_UID = "1.2.826.0.1.3680043.8.498.12345"


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * k @ k


@pytest.fixture()
def oblique_volume() -> tuple[np.ndarray, Geometry]:
    rng = np.random.default_rng(7)
    hu = rng.integers(-1024, 3072, size=(5, 6, 7), dtype=np.int16)
    direction = _rotation(np.array([0.3, -0.5, 0.8]), 0.35)
    geometry = Geometry(
        origin_xyz=(-171.3, 12.25, -305.5),
        spacing_xyz=(0.68, 0.74, 2.5),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return hu, geometry


def _read_series(folder, series_uid) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    assert reader.GetGDCMSeriesIDs(str(folder)) == (series_uid,)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return reader.Execute()


def test_round_trip_oblique_anisotropic(tmp_path, oblique_volume):
    hu, geometry = oblique_volume
    paths = write_dicom_series(hu, geometry, tmp_path / "series", SERIES_UID)
    assert [p.name for p in paths] == [f"{i:06d}.dcm" for i in range(5)]

    image = _read_series(tmp_path / "series", SERIES_UID)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)
    np.testing.assert_allclose(image.GetOrigin(), geometry.origin_xyz, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), geometry.spacing_xyz, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), geometry.direction, atol=1e-4)
    assert not list((tmp_path / "series").glob(".*.tmp")), "temporary files left behind"


def test_tags_and_stored_pixels(tmp_path, oblique_volume):
    hu, geometry = oblique_volume
    paths = write_dicom_series(hu, geometry, tmp_path, SERIES_UID, study_uid="1.2.3", extra_tags={"0008|103e": "x"})
    reader = sitk.ImageFileReader()
    sop_uids = set()
    for index, path in enumerate(paths):
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        tag = lambda key: reader.GetMetaData(key).strip()  # noqa: E731
        assert tag("0008|0060") == "CT"
        assert tag("0008|0016") == "1.2.840.10008.5.1.4.1.1.2"
        assert tag("0020|000e") == SERIES_UID
        assert tag("0020|000d") == "1.2.3"
        assert tag("0020|0013") == str(index + 1)
        assert tag("0008|103e") == "x"
        assert float(tag("0028|1052")) == -1024.0 and float(tag("0028|1053")) == 1.0
        assert float(tag("0018|0050")) == pytest.approx(2.5)
        row_spacing, col_spacing = (float(v) for v in tag("0028|0030").split("\\"))
        assert (row_spacing, col_spacing) == pytest.approx((0.74, 0.68))
        position = [float(v) for v in tag("0020|0032").split("\\")]
        np.testing.assert_allclose(position, geometry.irc_to_xyz((index, 0, 0)), atol=1e-4)
        orientation = [float(v) for v in tag("0020|0037").split("\\")]
        direction = geometry.direction_matrix
        np.testing.assert_allclose(orientation, [*direction[:, 0], *direction[:, 1]], atol=1e-6)
        sop = tag("0008|0018")
        assert is_series_uid(sop)
        sop_uids.add(sop)
        # Uncompressed pixel data is the file's last element: stored = hu - intercept.
        n_pixels = hu.shape[1] * hu.shape[2]
        stored = np.frombuffer(path.read_bytes()[-2 * n_pixels :], dtype="<i2").reshape(hu.shape[1:])
        np.testing.assert_array_equal(stored, hu[index].astype(np.int32) + 1024)
    assert len(sop_uids) == len(paths)


def test_slice_indices_writes_only_those(tmp_path, oblique_volume):
    hu, geometry = oblique_volume
    paths = write_dicom_series(hu, geometry, tmp_path, SERIES_UID, slice_indices=[0, 1, 3, 4])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000.dcm", "000001.dcm", "000003.dcm", "000004.dcm"]
    assert len(paths) == 4


def test_deterministic_bytes(tmp_path, oblique_volume):
    hu, geometry = oblique_volume
    fixed = {"0008|0020": "20000101", "0008|0030": "120000"}
    first = write_dicom_series(hu, geometry, tmp_path / "a", SERIES_UID, extra_tags=fixed)
    second = write_dicom_series(hu, geometry, tmp_path / "b", SERIES_UID, extra_tags=fixed)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_derived_uid_valid_and_stable():
    uid = derived_uid("1.2.3", "slice", 4)
    assert is_series_uid(uid) and uid.startswith("2.25.")
    assert uid == derived_uid("1.2.3", "slice", 4) != derived_uid("1.2.3", "slice", 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)}, "right-handed"),
        ({"series_uid": "1.2.03"}, "not a valid series UID"),
        ({"hu": np.zeros((2, 2), np.int16)}, "shape"),
        ({"hu": np.zeros((2, 2, 2), np.float32)}, "dtype"),
        ({"slice_indices": [2]}, "outside 0..1"),
        ({"rescale_slope": 2.0, "hu": np.ones((2, 2, 2), np.int16)}, "16-bit integers"),
    ],
)
def test_bad_input(tmp_path, kwargs, message):
    args = {"hu": np.zeros((2, 2, 2), np.int16), "series_uid": SERIES_UID, "slice_indices": None}
    direction = kwargs.pop("direction", (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    args.update(kwargs)
    geometry = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), direction)
    with pytest.raises(BadInputError, match=message):
        write_dicom_series(
            args["hu"],
            geometry,
            tmp_path,
            args["series_uid"],
            rescale_slope=args.get("rescale_slope", 1.0),
            slice_indices=args["slice_indices"],
        )
