"""Inputs the property test (test_property_bad_input.py) found ending in exit 1 or a silent exit 0.

Each is now a one-line error (exit 2) that names the bad value; the input folder is left as it was.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from tests.cli.test_property_bad_dicom import DICOM_UID, write_small_series
from tests.cli.test_property_bad_input import UID, _header, _write_mhd_case
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.folder_digest import tree_digest


def _mhd(tmp_path: Path, raw_size: int = 240, **values: str) -> list[str]:
    return ["info", str(_write_mhd_case(tmp_path, _header(**values), raw_size, None))]


def _evaluate_ragged(tmp_path: Path) -> list[str]:
    # Every row has one field more than the header: pandas made the first field the index.
    (tmp_path / "pred.csv").write_text(f"seriesuid,coordX,coordZ,probability\n{UID},1,2,3,0.5\n{UID},4,5,6,0.7\n")
    (tmp_path / "annotations.csv").write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID},1,2,3,6\n")
    return ["evaluate", str(tmp_path / "pred.csv"), "--annotations", str(tmp_path / "annotations.csv")]


def _evaluate_negative_seed(tmp_path: Path) -> list[str]:
    (tmp_path / "pred.csv").write_text(f"seriesuid,coordX,coordY,coordZ,probability\n{UID},1,2,3,0.5\n")
    (tmp_path / "annotations.csv").write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID},1,2,3,6\n")
    return [
        "evaluate",
        str(tmp_path / "pred.csv"),
        "--annotations",
        str(tmp_path / "annotations.csv"),
        "--bootstrap",
        "3",
        "--seed",
        "-1",
    ]


def _diagnose(tmp_path: Path, *options: str) -> list[str]:
    uid = write_phantom_luna(tmp_path / "luna", 1)[0]
    models = write_models(tmp_path / "models")
    return [
        "diagnose",
        uid,
        "--data-root",
        str(tmp_path / "luna"),
        "--seg-model",
        str(models["seg"]),
        "--cls-model",
        str(models["cls"]),
        "--quiet",
        *options,
    ]


CASES = {
    # was: internal error: ValueError: embedded null byte
    "NUL in ElementDataFile": (
        lambda tmp: _mhd(tmp, ElementDataFile="a\0b.raw"),
        r"^error: .*\.mhd: ElementDataFile 'a\\x00b\.raw' is not a usable file name \(it holds a NUL byte\)$",
    ),
    # was: internal error: ValueError: cannot reshape array of size 0 (the size wrapped around to 0 bytes)
    "DimSize whose product overflows int64": (
        lambda tmp: _mhd(tmp, raw_size=0, DimSize="4294967296 4294967296 1"),
        r"^error: .*\.raw: 0 bytes, but the header .*\.mhd \(DimSize \[4294967296, 4294967296, 1\], MET_SHORT\) "
        r"needs 36893488147419103232; the file is truncated",
    ),
    # was: internal error: TypeError: can only concatenate str (not "int") to str
    "CSV rows longer than the header": (
        _evaluate_ragged,
        r"^error: .*pred\.csv:2: 5 fields, but the header has 4 \(seriesuid,coordX,coordZ,probability\); "
        r"give every row one value per column$",
    ),
    # was: internal error: ValueError: expected non-negative integer
    "evaluate --seed -1": (_evaluate_negative_seed, r"^error: --seed -1 is negative; give 0 or more$"),
    # was: exit 0 after 14 s merging every candidate into one
    "diagnose --merge-fraction inf": (
        lambda tmp: _diagnose(tmp, "--merge-fraction", "inf"),
        r"^error: merge fraction inf must be a finite number >= 0 \(0 turns merging off\)$",
    ),
    # was: exit 0, the lung mask silently covering everything
    "diagnose --lung-margin inf": (
        lambda tmp: _diagnose(tmp, "--lung-margin", "inf"),
        r"^error: lung margin inf mm must be a finite number >= 0, e\.g\. 15$",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_found_by_the_property_test_exits_2_with_one_line(tmp_path, name):
    build, message = CASES[name]
    args = build(tmp_path)
    before = tree_digest(tmp_path)
    result = run_ct(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert tree_digest(tmp_path) == before


def _series_with_damaged_tag(folder: Path, tag: bytes, value: bytes) -> Path:
    """A 4-slice series whose last file has ``value`` over the start of ``tag``'s value (implicit VR)."""
    files = write_small_series(folder)
    data = files[3].read_bytes()
    at = data.find(tag)  # implicit VR: the tag, a 4-byte length, then the value
    length = struct.unpack("<I", data[at + 4 : at + 8])[0]
    assert at > 0 and length >= len(value)
    files[3].write_bytes(data[: at + 8] + value + data[at + 8 + len(value) :])
    return folder


def test_a_garbled_instance_number_does_not_stop_reading_the_series(tmp_path):
    """A damaged byte in InstanceNumber (IS '4' -> b'\\xfbW') was `ValueError: could not convert string to float`
    (exit 1) in `ct info` and `ct series list`; slices are placed by ImagePositionPatient, so the series reads."""
    folder = _series_with_damaged_tag(tmp_path / "ct", b"\x20\x00\x13\x00", b"\xfbW")
    before = tree_digest(tmp_path)
    info = run_ct("info", str(folder), "--json")
    assert info.exit_code == 0, info.output
    assert info.stderr == ""
    assert json.loads(info.stdout)["shape_irc"] == [4, 8, 8]
    listing = run_ct("series", "list", "--data-root", str(folder), "--json")
    assert listing.exit_code == 0, listing.output
    assert [(s["series_uid"], s["n_files"]) for s in json.loads(listing.stdout)] == [(DICOM_UID, 4)]
    assert tree_digest(tmp_path) == before


def test_a_series_uid_with_non_utf8_bytes_is_listed_and_named(tmp_path):
    """Two bytes of one file's SeriesInstanceUID damaged (not UTF-8) made `ct series list` fail with
    UnicodeEncodeError (exit 1); now the damaged UID is shown with U+FFFD and `ct info` names both series."""
    folder = _series_with_damaged_tag(tmp_path / "ct", b"\x20\x00\x0e\x00", b"1.2\xbe\xd1")
    damaged = "1.2\ufffd\ufffd" + DICOM_UID[5:]
    before = tree_digest(tmp_path)
    listing = run_ct("series", "list", "--data-root", str(folder))
    assert listing.exit_code == 0, listing.output
    assert listing.stderr == ""
    as_json = run_ct("series", "list", "--data-root", str(folder), "--json")
    assert [(s["series_uid"], s["n_files"]) for s in json.loads(as_json.stdout)] == [(DICOM_UID, 3), (damaged, 1)]
    info = run_ct("info", str(folder))
    assert info.exit_code == 2
    assert info.stderr == (
        f"error: {folder} holds 2 series ({DICOM_UID} (CT, 3 files); {damaged} (CT, 1 files)); "
        "name one with --series UID\n"
    )
    assert tree_digest(tmp_path) == before
