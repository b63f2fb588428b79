"""A few top-level tags read straight from a DICOM file's bytes, for files GDCM will not open.

SimpleITK reads images only: a structured report (SR), a segmentation or a presentation state
without pixel data fails its header read like a corrupt file would. Reading Modality and
SeriesInstanceUID here lets the loader say "series X is modality SR, not CT" instead of
"unreadable file". This is not a DICOM reader: it walks the top-level data set of the
little-endian transfer syntaxes (explicit, implicit, deflated; big endian too) far enough to
find the wanted tags, skips sequences (whose items may hold other series' UIDs), and gives up
with an empty answer on anything it does not understand.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

Tag = tuple[int, int]  # (group, element)

MODALITY: Tag = (0x0008, 0x0060)
SERIES_INSTANCE_UID: Tag = (0x0020, 0x000E)

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_DEFLATED_LE = "1.2.840.10008.1.2.1.99"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
# Explicit-VR elements with these VRs have 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_GROUP = 0xFFFE
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD
MAX_BYTES = 16 * 2**20  # the wanted tags sit near the start; never read a huge file whole


class _Malformed(Exception):
    """The bytes are not a data set this walker understands."""


def read_top_level_tags(path: Path, tags: Iterable[Tag]) -> dict[Tag, str]:
    """The text values of ``tags`` found in the top-level data set of the DICOM file ``path``.

    Returns:
        {tag: value stripped of padding}; tags not found are absent, and an unreadable or
        unparseable file gives {}.
    """
    wanted = set(tags)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES)
    except OSError:
        return {}
    try:
        return _find(data, wanted)
    except (_Malformed, struct.error, zlib.error, RecursionError):
        return {}


def _find(data: bytes, wanted: set[Tag]) -> dict[Tag, str]:
    if data[128:132] == b"DICM":
        pos, syntax = 132, ""
        while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
            group, element, start, length, pos = _element(data, pos, True, "<")  # file meta: explicit LE
            if element == 0x0010:
                syntax = data[start : start + length].decode("ascii", "replace").strip("\0 ")
        data = data[pos:]
    else:  # no preamble (old files): explicit if bytes 4-5 look like a VR
        syntax = _EXPLICIT_LE if data[4:6].isalpha() and data[4:6].isupper() else _IMPLICIT_LE
    if syntax == _DEFLATED_LE:
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    explicit = syntax != _IMPLICIT_LE
    endian = ">" if syntax == _EXPLICIT_BE else "<"
    found: dict[Tag, str] = {}
    last = max(wanted)
    pos = 0
    while pos + 8 <= len(data) and len(found) < len(wanted):
        group, element, start, length, pos = _element(data, pos, explicit, endian)
        if (group, element) > last:
            break  # top-level tags come in ascending order
        if (group, element) in wanted:
            found[(group, element)] = data[start : start + length].decode("ascii", "replace").strip("\0 ")
    return found


def _element(data: bytes, pos: int, explicit: bool, endian: str) -> tuple[int, int, int, int, int]:
    """(group, element, value start, value length, next position) of the element at ``pos``."""
    group, element = struct.unpack_from(endian + "HH", data, pos)
    if group == _ITEM_GROUP:
        raise _Malformed
    vr = data[pos + 4 : pos + 6] if explicit else b""
    if explicit and vr in _LONG_VRS:
        (length,), start = struct.unpack_from(endian + "I", data, pos + 8), pos + 12
    elif explicit:
        (length,), start = struct.unpack_from(endian + "H", data, pos + 6), pos + 8
    else:
        (length,), start = struct.unpack_from(endian + "I", data, pos + 4), pos + 8
    if length == _UNDEFINED_LENGTH:
        # a sequence (items in implicit VR when its VR is UN) or encapsulated pixel data
        return group, element, start, 0, _skip_items(data, start, explicit and vr != b"UN", endian)
    if start + length > len(data):
        raise _Malformed
    return group, element, start, length, start + length


def _skip_items(data: bytes, pos: int, explicit: bool, endian: str) -> int:
    """The position after the sequence delimiter that ends the items starting at ``pos``."""
    while True:
        group, element, length = struct.unpack_from(endian + "HHI", data, pos)
        pos += 8
        if group != _ITEM_GROUP:
            raise _Malformed
        if element == _SEQUENCE_END:
            return pos
        if element != _ITEM:
            raise _Malformed
        if length != _UNDEFINED_LENGTH:
            pos += length
            continue
        while struct.unpack_from(endian + "HH", data, pos) != (_ITEM_GROUP, _ITEM_END):
            pos = _element(data, pos, explicit, endian)[4]
        pos += 8
