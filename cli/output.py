"""Printing helpers: JSON to stdout, tables through rich."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# A batch (`ct diagnose`, `ct prepcache`) finished, but some of its series failed.
EXIT_SOME_FAILED = 3


def console() -> Console:
    """A console on stdout (created per call: no module-level state)."""
    return Console(soft_wrap=False)


def print_json(obj: Any, *, lines: bool = False) -> None:
    """One JSON document (or one JSON Lines record) on stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":") if lines else None, indent=None if lines else 2) + "\n")
    sys.stdout.flush()
