"""Open a PyTorch file without running code from it, and say plainly why a file is refused.

``torch.load(weights_only=True)`` refuses pickles that would call anything but torch's tensor
rebuilders; its own errors are long and name no fix, so they are turned into one-line
:class:`BadCheckpointError` messages here. Nothing in a refused file is ever executed:
``pickletools`` only parses opcodes to name the offending callable.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ct_pipeline.errors import BadCheckpointError

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol 2 or later (torch's legacy format)
# Globals a torch checkpoint legitimately names (as "module name"); any other one means code.
_TORCH_GLOBAL_PREFIXES = ("torch", "collections OrderedDict", "_codecs encode", "builtins set", "__builtin__ set")
_SCAN_LIMIT_BYTES = 1 << 20  # the pickled structure sits at the start; tensor bytes follow
_RECREATE_HINT = "give a file written by `ct train` or `ct models import-book`"


def load_torch_file(path: os.PathLike | str, hint: str = _RECREATE_HINT) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with one-line errors.

    ``hint`` ends the messages: what the user should give instead.

    Raises:
        BadCheckpointError: the file is missing, a folder, empty, unreadable, not a PyTorch
            file, truncated, or holds pickled code (refused for safety).
    """
    path = Path(path)
    if not path.exists():
        raise BadCheckpointError(f"checkpoint {path} does not exist; check the path ({hint}).")
    if path.is_dir():
        raise BadCheckpointError(f"checkpoint {path} is a folder, not a file; {hint}.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SCAN_LIMIT_BYTES)
    except OSError as err:
        message = f"checkpoint {path} cannot be read ({err.strerror}); check its permissions."
        raise BadCheckpointError(message) from err
    if not head:
        raise BadCheckpointError(f"checkpoint {path} is empty (0 bytes); {hint}.")
    try:
        with warnings.catch_warnings():
            # torch warns about unusual pickle protocols before refusing them; the error says enough.
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # any failure here is a property of the file's content
        raise BadCheckpointError(_refusal_message(path, head, err, hint)) from err


def _refusal_message(path: Path, head: bytes, err: Exception, hint: str) -> str:
    code = _named_global(str(err)) if isinstance(err, pickle.UnpicklingError) else None
    code = code or _foreign_global(_pickle_bytes(path, head))
    if code:
        return (
            f"{path} holds pickled Python code ({code}) that would run on loading, so it is refused "
            f"for safety; only files of plain tensors and data are loaded ({hint})."
        )
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO:
        what = "damaged, truncated, or another kind of file"
        return f"{path} is not a readable PyTorch checkpoint ({what}); {hint}."
    return f"{path} is not a PyTorch checkpoint file; {hint}."


def _named_global(message: str) -> str | None:
    """The callable torch's weights-only unpickler refused, e.g. "posix.system"."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _pickle_bytes(path: Path, head: bytes) -> bytes:
    """The pickled part of a file: ``*/data.pkl`` inside a zip-format file, else its first bytes."""
    if not head.startswith(_ZIP_MAGIC):
        return head
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                return b""
            with archive.open(name) as member:
                return member.read(_SCAN_LIMIT_BYTES)
    except (zipfile.BadZipFile, OSError, RuntimeError):
        return b""  # a truncated zip cannot be inspected; it is reported as damaged


def _foreign_global(data: bytes) -> str | None:
    """The first non-torch global that the (up to 8 concatenated) pickles in ``data`` would import.

    Parses opcodes only (``pickletools.genops``), never executes them.
    """
    stream = io.BytesIO(data)
    for _ in range(8):  # torch's legacy format is a few pickles in a row, then raw tensor bytes
        recent_strings: list[str] = []
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    name = str(arg)
                elif opcode.name == "STACK_GLOBAL":
                    name = " ".join(recent_strings[-2:]) or "an unnamed global"
                else:
                    if isinstance(arg, str):
                        recent_strings.append(arg)
                    continue
                if not name.startswith(_TORCH_GLOBAL_PREFIXES):
                    return name.replace(" ", ".")
        except Exception:  # not (or no longer) a valid pickle: stop scanning
            return None
    return None
