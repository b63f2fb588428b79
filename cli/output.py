"""Printing helpers: JSON to stdout, tables through rich."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

# A batch (`ct diagnose`, `ct prepcache`) finished, but some of its series failed.
EXIT_SOME_FAILED = 3


def console() -> Console:
    """A console on stdout (created per call: no module-level state)."""
    return Console(soft_wrap=False)


def _json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: JSON has no such numbers, and ``NaN`` breaks strict parsers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj


def print_json(obj: Any, *, lines: bool = False) -> None:
    """One JSON document (or one JSON Lines record) on stdout; never prints NaN or Infinity."""
    separators, indent = ((",", ":"), None) if lines else (None, 2)
    text = json.dumps(_json_safe(obj), separators=separators, indent=indent, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
