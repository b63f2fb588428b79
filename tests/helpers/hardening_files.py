"""Hand-made DICOM bytes for the hardening tests: objects GDCM will not open as images.

A structured report (SR) or a segmentation stored without pixel data is a valid DICOM file that
SimpleITK's header read rejects. :func:`write_non_image_dicom` writes such a file byte by byte
(no pydicom), with a ReferencedSeriesSequence of undefined length whose item holds *another*
SeriesInstanceUID, as real SR/SEG objects do: a reader that finds the tag anywhere rather than
at the top level would group the file with the CT it refers to.
"""

from __future__ import annotations

import struct
from pathlib import Path

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"}
SOP_CLASS = {"SR": "1.2.840.10008.5.1.4.1.1.88.11", "SEG": "1.2.840.10008.5.1.4.1.1.66.4"}


def _element(group: int, element: int, vr: bytes, value: bytes | str, explicit: bool = True) -> bytes:
    if isinstance(value, str):
        value = value.encode("ascii")
        if len(value) % 2:  # even lengths: UIDs pad with NUL, text with a space
            value += b"\0" if vr == b"UI" else b" "
    if not explicit:
        return struct.pack("<HHI", group, element, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _sequence_of_undefined_length(group: int, element: int, items: list[bytes], explicit: bool = True) -> bytes:
    body = b"".join(
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        for item in items
    )
    header = struct.pack("<HH", group, element) + (b"SQ\0\0" if explicit else b"") + struct.pack("<I", 0xFFFFFFFF)
    return header + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def write_non_image_dicom(
    path: Path,
    series_uid: str,
    modality: str = "SR",
    referenced_series_uid: str = "1.2.826.0.1.3680043.8.498.424242",
    explicit: bool = True,
    preamble: bool = True,
) -> Path:
    """Write a DICOM object without pixel data (``modality`` SR, SEG, ...) to ``path``."""
    sop_class = SOP_CLASS.get(modality, SOP_CLASS["SR"])
    instance = f"{series_uid}.1"
    dataset = b"".join(
        [
            _element(0x0008, 0x0016, b"UI", sop_class, explicit),
            _element(0x0008, 0x0018, b"UI", instance, explicit),
            _element(0x0008, 0x0060, b"CS", modality, explicit),
            _sequence_of_undefined_length(
                0x0008, 0x1115, [_element(0x0020, 0x000E, b"UI", referenced_series_uid, explicit)], explicit
            ),
            _element(0x0020, 0x000D, b"UI", f"{series_uid}.2", explicit),
            _element(0x0020, 0x000E, b"UI", series_uid, explicit),
        ]
    )
    if not preamble:
        data = dataset
    else:
        meta = b"".join(
            [
                _element(0x0002, 0x0001, b"OB", b"\0\1"),
                _element(0x0002, 0x0002, b"UI", sop_class),
                _element(0x0002, 0x0003, b"UI", instance),
                _element(0x0002, 0x0010, b"UI", EXPLICIT_LE if explicit else IMPLICIT_LE),
            ]
        )
        meta = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta))) + meta
        data = b"\0" * 128 + b"DICM" + meta + dataset
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
