"""DICOM objects that are not images (SR, SEG without pixels) are refused by modality, not as corrupt.

GDCM, through SimpleITK, fails to read the header of a DICOM file without pixel data exactly as
it fails on a corrupt one; ct_pipeline.loading.dicom_tags reads Modality and SeriesInstanceUID
from the bytes instead, at the top level of the data set only.
"""

import json

import numpy as np
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading import LoadOptions, load_ct
from ct_pipeline.loading.dicom import discover_series, read_slice_header
from ct_pipeline.loading.dicom_tags import MODALITY, SERIES_INSTANCE_UID, read_top_level_tags
from tests.helpers.cli_process import run_ct
from tests.helpers.hardening_files import write_non_image_dicom

CT_UID = "1.2.826.0.1.3680043.8.498.31"
SR_UID = "1.2.826.0.1.3680043.8.498.32"
GEOMETRY = Geometry((-10.0, -20.0, -30.0), (0.8, 0.8, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
WANTED = (MODALITY, SERIES_INSTANCE_UID)


def _ct(folder, **kwargs):
    hu = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    return write_dicom_series(hu, GEOMETRY, folder, CT_UID, **kwargs), hu


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit VR", "implicit VR"])
@pytest.mark.parametrize("preamble", [True, False], ids=["part-10 file", "no preamble"])
def test_tags_are_read_at_the_top_level_not_inside_sequences(tmp_path, explicit, preamble):
    # The ReferencedSeriesSequence item before the top-level tag holds the CT's UID.
    path = write_non_image_dicom(
        tmp_path / "sr.dcm", SR_UID, "SR", referenced_series_uid=CT_UID, explicit=explicit, preamble=preamble
    )
    assert read_top_level_tags(path, WANTED) == {MODALITY: "SR", SERIES_INSTANCE_UID: SR_UID}


def test_tags_of_a_gdcm_written_ct_file_agree_with_simpleitk(tmp_path):
    files, _ = _ct(tmp_path / "ct")
    header = read_slice_header(files[0])
    assert read_top_level_tags(files[0], WANTED) == {MODALITY: header.modality, SERIES_INSTANCE_UID: header.series_uid}
    assert header.modality == "CT" and header.series_uid == CT_UID


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\0" * 128 + b"DICM",
        b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f",
        b"not a DICOM file at all " * 20,
    ],
    ids=["empty", "preamble only", "meta element past the end", "text"],
)
def test_unparseable_bytes_give_no_tags(tmp_path, content):
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    assert read_top_level_tags(path, WANTED) == {}
    assert read_top_level_tags(tmp_path / "missing.dcm", WANTED) == {}


@pytest.mark.parametrize("modality", ["SR", "SEG"])
def test_series_without_pixel_data_is_refused_for_its_modality(tmp_path, modality):
    write_non_image_dicom(tmp_path / "obj" / "1.dcm", SR_UID, modality, referenced_series_uid=CT_UID)
    write_non_image_dicom(tmp_path / "obj" / "2.dcm", SR_UID, modality, referenced_series_uid=CT_UID)
    [series] = discover_series(tmp_path / "obj")
    assert (series.series_uid, series.modality, series.n_files) == (SR_UID, modality, 2)
    with pytest.raises(
        BadDataError, match=rf"^series {SR_UID} is modality {modality}, not CT; ct reads CT series only$"
    ):
        load_ct(tmp_path / "obj")


def test_report_beside_its_ct_is_a_second_series_and_the_ct_still_reads(tmp_path):
    _, hu = _ct(tmp_path / "exam")
    write_non_image_dicom(tmp_path / "exam" / "dose_report.dcm", SR_UID, "SR", referenced_series_uid=CT_UID)
    found = [(s.series_uid, s.modality, s.n_files) for s in discover_series(tmp_path / "exam")]
    assert found == [(CT_UID, "CT", 6), (SR_UID, "SR", 1)]  # not merged into the CT it refers to
    assert np.array_equal(load_ct(tmp_path / "exam", options=LoadOptions(series_uid=CT_UID)).hu, hu)

    listing = run_ct("series", "list", "--data-root", str(tmp_path / "exam"), "--json")
    assert listing.exit_code == 0, listing.output
    assert sorted((s["series_uid"], s["modality"]) for s in json.loads(listing.stdout)) == [
        (CT_UID, "CT"),
        (SR_UID, "SR"),
    ]
    result = run_ct("info", str(tmp_path / "exam"))
    assert result.exit_code == 2
    assert (
        f"holds 2 series ({CT_UID} (CT, 6 files); {SR_UID} (SR, 1 files)); name one with --series UID" in result.stderr
    )
    picked = run_ct("info", str(tmp_path / "exam"), "--series", SR_UID)
    assert picked.exit_code == 2
    assert picked.stderr.strip() == f"error: series {SR_UID} is modality SR, not CT; ct reads CT series only"


def test_ct_file_with_a_broken_header_is_still_reported_as_corrupt(tmp_path):
    files, _ = _ct(tmp_path / "ct")
    data = files[2].read_bytes()
    # cut inside the element after SeriesInstanceUID: Modality and the UID are still in the bytes
    uid_at = data.index(CT_UID.encode())
    files[2].write_bytes(data[: uid_at + len(CT_UID) + 12])
    assert read_top_level_tags(files[2], WANTED).get(MODALITY) == "CT"
    with pytest.raises(BadDataError, match=r"000002\.dcm: unreadable DICOM file \(corrupt or truncated\)"):
        load_ct(tmp_path / "ct")


def test_resampling_an_uneven_series_prints_only_our_warning(tmp_path, capfd, caplog):
    _ct(tmp_path / "gap", slice_indices=[0, 1, 2, 4, 5])
    capfd.readouterr()
    with caplog.at_level("WARNING"):
        volume = load_ct(tmp_path / "gap", options=LoadOptions(allow_uneven_spacing=True))
    assert volume.shape_irc == (6, 5, 4)
    assert "about 1 slice(s) missing; resampling onto a regular 2.500 mm grid" in caplog.text
    assert "ImageSeriesReader" not in capfd.readouterr().err  # ITK's own C++ warning is muted
