"""What every benchmark shares: timing, machine facts, and the result record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
        record = asdict(self) | {"machine": machine_facts(), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        path = RESULTS_DIR / f"{self.key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
        return path


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
