"""DICOM folders: discovery by series, and every way a scanner folder can be wrong."""

import numpy as np
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading import LoadOptions, load_ct
from ct_pipeline.loading.dicom import discover_series

UID = "1.2.826.0.1.3680043.8.498.1"
UID2 = "1.2.826.0.1.3680043.8.498.2"
STAMP = {"0008|0020": "20260101", "0008|0030": "120000"}


def _rotation_z(degrees: float) -> tuple[float, ...]:
    a = np.radians(degrees)
    return tuple(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]).ravel())


GEOMETRY = Geometry((-100.0, -120.0, -200.0), (0.75, 0.75, 2.5), _rotation_z(7.0))


def _volume(n_slices=6):
    rng = np.random.default_rng(1)
    return rng.integers(-1000, 1500, size=(n_slices, 10, 12)).astype(np.int16)


def _write(folder, hu=None, uid=UID, geometry=GEOMETRY, **kwargs):
    hu = _volume() if hu is None else hu
    tags = {**STAMP, **kwargs.pop("extra_tags", {})}
    return write_dicom_series(hu, geometry, folder, uid, extra_tags=tags, **kwargs), hu


def test_oblique_series_reads_back_with_its_geometry(tmp_path):
    _, hu = _write(tmp_path / "a")
    volume = load_ct(tmp_path / "a")
    assert volume.series_uid == UID
    assert np.array_equal(volume.hu, hu)
    assert np.allclose(volume.spacing_xyz, GEOMETRY.spacing_xyz)
    assert np.allclose(volume.origin_xyz, GEOMETRY.origin_xyz, atol=1e-4)
    assert np.allclose(volume.direction, GEOMETRY.direction, atol=1e-5)


def test_file_order_on_disk_does_not_matter(tmp_path):
    files, hu = _write(tmp_path / "a", file_name_pattern="slice{:03d}.dcm")
    for f in files:  # reverse the names: slice 0 becomes the last file alphabetically
        f.rename(f.with_name("z" + str(999 - int(f.stem[5:])) + ".dcm"))
    assert np.array_equal(load_ct(tmp_path / "a").hu, hu)


def test_one_series_split_over_two_folders_is_one_series(tmp_path):
    _write(tmp_path / "root" / "part1", slice_indices=[0, 1, 2])
    _write(tmp_path / "root" / "part2", slice_indices=[3, 4, 5])
    series = discover_series(tmp_path / "root")
    assert [(s.series_uid, s.n_files) for s in series] == [(UID, 6)]
    assert np.array_equal(load_ct(tmp_path / "root").hu, _volume())


def test_two_series_in_one_folder_are_both_found_and_not_merged(tmp_path):
    _write(tmp_path / "mixed")
    _write(tmp_path / "mixed", uid=UID2, file_name_pattern="b{:06d}.dcm")
    assert [(s.series_uid, s.n_files) for s in discover_series(tmp_path / "mixed")] == [(UID, 6), (UID2, 6)]
    with pytest.raises(
        BadInputError, match=rf"holds 2 series \({UID} \(CT, 6 files\); {UID2} \(CT, 6 files\)\).*--series"
    ):
        load_ct(tmp_path / "mixed")
    assert load_ct(tmp_path / "mixed", options=LoadOptions(series_uid=UID2)).shape_irc == (6, 10, 12)


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_non_ct_series_is_refused(tmp_path, modality):
    _write(tmp_path / "mr", modality=modality)
    with pytest.raises(BadDataError, match=rf"series {UID} is modality {modality}, not CT"):
        load_ct(tmp_path / "mr")


def test_missing_slice_is_refused_with_the_gap(tmp_path):
    _write(tmp_path / "gap", slice_indices=[0, 1, 2, 4, 5])
    with pytest.raises(
        BadDataError,
        match=r"gap of 5\.000 mm .* expected 2\.500 mm: about 1 slice\(s\) missing; pass --allow-uneven-spacing",
    ):
        load_ct(tmp_path / "gap")


def test_missing_slice_with_override_is_resampled_onto_a_regular_grid(tmp_path):
    _, hu = _write(tmp_path / "gap", slice_indices=[0, 1, 2, 4, 5])
    volume = load_ct(tmp_path / "gap", options=LoadOptions(allow_uneven_spacing=True))
    assert volume.shape_irc == (6, 10, 12)
    assert np.array_equal(volume.hu[[0, 1, 2, 4, 5]], hu[[0, 1, 2, 4, 5]])
    expected_middle = np.rint((hu[2].astype(float) + hu[4]) / 2).astype(np.int16)
    assert np.abs(volume.hu[3].astype(int) - expected_middle).max() <= 1


def test_uneven_spacing_is_refused(tmp_path):
    files, _ = _write(tmp_path / "uneven")
    # move the last slice 1 mm further along the normal (z here, the rotation is about z)
    last = tmp_path / "uneven2"
    hu = _volume()
    write_dicom_series(hu[:5], GEOMETRY, last, UID, extra_tags=STAMP)
    shifted = Geometry((-100.0, -120.0, -200.0 + 5 * 2.5 + 1.0), GEOMETRY.spacing_xyz, GEOMETRY.direction)
    write_dicom_series(hu[5:], shifted, last, UID, extra_tags=STAMP, file_name_pattern="x{:06d}.dcm")
    with pytest.raises(BadDataError, match=r"gap of 3\.500 mm.*expected 2\.500 mm: uneven slice spacing"):
        load_ct(last)


def test_mixed_orientations_are_refused(tmp_path):
    _write(tmp_path / "orient", slice_indices=[0, 1, 2])
    other = Geometry(GEOMETRY.origin_xyz, GEOMETRY.spacing_xyz, _rotation_z(20.0))
    write_dicom_series(
        _volume(),
        other,
        tmp_path / "orient",
        UID,
        extra_tags=STAMP,
        slice_indices=[3, 4, 5],
        file_name_pattern="o{:06d}.dcm",
    )
    with pytest.raises(BadDataError, match="mixes slice orientations"):
        load_ct(tmp_path / "orient")


def test_gantry_tilt_is_refused(tmp_path):
    hu = _volume()
    for i in range(6):  # each slice shifted 1 mm in y per slice: stacked along a tilted axis
        g = Geometry((-100.0, -120.0 + i * 1.0, -200.0 + i * 2.5), (0.75, 0.75, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        write_dicom_series(
            hu[i : i + 1], g, tmp_path / "tilt", UID, extra_tags=STAMP, file_name_pattern=f"t{i}_{{:03d}}.dcm"
        )
    with pytest.raises(BadDataError, match=r"gantry tilt of 21\.8 degrees"):
        load_ct(tmp_path / "tilt")


def test_corrupt_file_among_good_ones_is_named(tmp_path):
    files, _ = _write(tmp_path / "corrupt")
    files[3].write_bytes(files[3].read_bytes()[:200])
    with pytest.raises(BadDataError, match=rf"{files[3].name}: unreadable DICOM file"):
        load_ct(tmp_path / "corrupt")


def test_empty_folder_is_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no DICOM files found"):
        load_ct(tmp_path / "empty")
