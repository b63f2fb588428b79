"""Property: a DICOM series with one damaged file gets exit 0, or exit 2 with one line, from `ct info`
and `ct series list` (the property and its settings: test_property_bad_input.py).

The damage is aimed mostly at the values of the tags the loader reads, where a byte that is
not a digit or not UTF-8 reaches Python code; the rest truncates, overwrites or inserts bytes
anywhere, which GDCM mostly refuses as unreadable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.geometry import Geometry
from tests.cli.test_property_bad_input import COSTLY, _workdir, check_outcome

DICOM_UID = "1.2.826.0.1.3680043.8.498.9"


def write_small_series(folder: Path) -> list[Path]:
    """A 4-slice 8x8 CT series ``DICOM_UID`` in ``folder`` (ct_pipeline.dicom_writer); its files, in slice order."""
    geometry = Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    hu = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    return write_dicom_series(hu, geometry, folder, DICOM_UID)


@pytest.fixture(scope="module")
def dicom_slices(tmp_path_factory) -> list[bytes]:
    """The bytes of :func:`write_small_series`'s files."""
    return [path.read_bytes() for path in write_small_series(tmp_path_factory.mktemp("dicom"))]


# Tags whose values a "tag value" damage overwrites (group, element as in the file: little endian).
DICOM_TAGS = {
    "InstanceNumber": b"\x20\x00\x13\x00",
    "SeriesInstanceUID": b"\x20\x00\x0e\x00",
    "ImagePositionPatient": b"\x20\x00\x32\x00",
    "ImageOrientationPatient": b"\x20\x00\x37\x00",
    "PixelSpacing": b"\x28\x00\x30\x00",
    "Rows": b"\x28\x00\x10\x00",
    "Modality": b"\x08\x00\x60\x00",
}


def _damage(content: bytes, damage: str, at: float, data: bytes, tag: str) -> bytes:
    cut = int(at * len(content))
    if damage == "tag value":  # the first bytes of the tag's value (implicit VR: tag, 4-byte length, value)
        found = content.find(DICOM_TAGS[tag])
        cut = found + 8 if found >= 0 else cut
        data = data[: max(0, int.from_bytes(content[found + 4 : found + 8], "little"))] if found >= 0 else data
    return {
        "truncate": content[:cut],
        "overwrite": content[:cut] + data + content[cut + len(data) :],
        "tag value": content[:cut] + data + content[cut + len(data) :],
        "zero run": content[:cut] + bytes(len(data)) + content[cut + len(data) :],
        "insert": content[:cut] + data + content[cut:],
        "replace": data,
    }[damage]


@COSTLY
@given(
    damaged=st.integers(0, 3),
    damage=st.sampled_from(["tag value", "tag value", "truncate", "overwrite", "zero run", "insert", "replace"]),
    at=st.floats(0, 1),
    data=st.binary(min_size=1, max_size=16) | st.sampled_from([b"nan", b"-inf", b"1e400", b"\\\\", b"-1", b"0"]),
    tag=st.sampled_from(sorted(DICOM_TAGS)),
)
# Found before: non-numbers in InstanceNumber (ValueError) and non-UTF-8 bytes in a UID
# (UnicodeEncodeError printing `ct series list`): exit 1.
@example(damaged=3, damage="tag value", at=0.0, data=b"\xfbW", tag="InstanceNumber")
@example(damaged=3, damage="tag value", at=0.0, data=b"1.2\xbe\xd1", tag="SeriesInstanceUID")
# and a record separator (\x1e) in a UID, which split the one error line naming it in two
@example(damaged=3, damage="tag value", at=0.0, data=b"k\x93\xa7\xeb\x83\xd7\x1eZ", tag="SeriesInstanceUID")
def test_info_of_a_damaged_dicom_series_is_clean(tmp_path_factory, dicom_slices, damaged, damage, at, data, tag):
    folder = _workdir(tmp_path_factory)
    for index, content in enumerate(dicom_slices):
        if index == damaged:
            content = _damage(content, damage, at, data, tag)
        (folder / f"{index:06d}.dcm").write_bytes(content)
    check_outcome(["info", str(folder), "--json"], json_output=True)
    check_outcome(["series", "list", "--data-root", str(folder)])
    check_outcome(["series", "list", "--data-root", str(folder), "--json"], json_output=True)
