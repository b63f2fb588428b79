"""What every benchmark shares: timing, machine facts, and the result record."""

from __future__ import annotations

import json
import os
import platform
import posixpath
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Options whose value a reader names by its role, as the README does, not by where it lay on the machine that ran it.
PATH_PLACEHOLDERS = {"--data-root": "DATA", "--out": "OUT", "--cache-dir": "CACHE"}
# Paths that are the same on every machine, typed as they are.
_SYSTEM_PATHS = ("/dev/", "/proc/", "/sys/", "/usr/", "/bin/", "/etc/")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/[^\s;'\"`]+")


@dataclass
class Figure:
    """One measured figure next to the baseline measured in the same run.

    ``ratio`` is expressed so that bigger is better (e.g. baseline_time / our_time).
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Section:
    key: str
    title: str
    command: str
    setup: str
    figures: list[Figure] = field(default_factory=list)
    expectation: str = ""

    def save(self) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        measured_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        typed = {"command": typed_command(self.command)}
        record = asdict(self) | typed | {"machine": machine_facts(), "measured_at": measured_at}
        path = RESULTS_DIR / f"{self.key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
        return path


def typed_command(command: str) -> str:
    """``command`` as a user would type it, without the absolute paths of the machine it ran on.

    The value of an option in :data:`PATH_PLACEHOLDERS` becomes its placeholder (``--out /tmp/x``
    -> ``--out OUT``); any other absolute path becomes relative to the folder all of them share, the
    one a user would work in (``--record /w/q/a/out /w/q/b/data`` -> ``--record a/out b/data``).
    """
    found = [m for m in _ABSOLUTE_PATH.finditer(command) if not m.group().startswith(_SYSTEM_PATHS)]
    placeholders = {m.start(): PATH_PLACEHOLDERS.get(_option_before(command, m.start())) for m in found}
    parents = [posixpath.dirname(m.group().rstrip("/")) for m in found if placeholders[m.start()] is None]
    base = posixpath.commonpath(parents) if parents else "/"
    typed, end = [], 0
    for match in found:
        path = match.group()
        typed += [command[end : match.start()], placeholders[match.start()] or posixpath.relpath(path, base)]
        end = match.end()
    return "".join([*typed, command[end:]])


def _option_before(command: str, start: int) -> str:
    """The option a value at ``start`` belongs to: ``--out`` in ``--out /x`` and in ``--out=/x``."""
    before = command[:start]
    words = before.split()
    if not words:
        return ""
    if before.endswith("="):
        return words[-1][:-1]
    return words[-1] if before[-1].isspace() else ""


def machine_facts() -> dict[str, str]:
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "os": platform.platform(terse=True),
    }


def best_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def drop_page_cache_hint() -> str:
    return "files are read warm from the OS page cache (both sides equally); cold-disk figures depend on the disk"
