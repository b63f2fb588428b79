"""Throughput under contention: each command alone, then beside two CPU-bound processes.

On a cluster node or a shared workstation other jobs run on the same cores. What a command
keeps of its quiet throughput there depends on how many threads it runs and how they wait
(:mod:`ct_pipeline.threads`). Each command runs as a user runs it (`python -m cli ...` in a
subprocess, default options), alone and beside two `while True: pass` processes, in alternating
rounds; each keeps its best round. Target: at least 40% of the quiet throughput (the fair share
of 2 cores among the command and two busy processes is 67%; 50% if the command's loader worker
counts as a fourth).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import Figure, Section

REPO = Path(__file__).resolve().parent.parent
N_SERIES, VAL_STRIDE, ROUNDS = 12, 3, 2
TARGET = 0.40
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ \|.*\| ([\d,.]+) samples/s")


def _ct(*args: object, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    if done.returncode != 0:
        raise RuntimeError(f"ct {' '.join(map(str, args))} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` CPU-bound processes for the duration of the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5)
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _train_rate(task: str, root: Path, cache: Path, work: Path, extra: tuple = ()) -> float:
    """samples/s of the second epoch of a fresh run (the first warms the caches up)."""
    out = work / f"{task}-{time.monotonic_ns()}"
    stdout = _ct(
        f"train-{task}",
        "--data-root",
        root,
        "--cache-dir",
        cache,
        "--out",
        out,
        "--epochs",
        2,
        "--val-every",
        99,
        "--val-stride",
        VAL_STRIDE,
        "--epoch-size",
        320,
        *extra,
    )
    rates = [float(m.group(2).replace(",", "")) for line in stdout.splitlines() if (m := EPOCH_LINE.match(line))]
    return rates[-1]


def _diagnose_rate(root: Path, cache: Path, work: Path, models: dict[str, Path]) -> float:
    """Series per minute of `ct diagnose --all` over the data root (wall time of the command)."""
    out = work / f"diagnose-{time.monotonic_ns()}"
    started = time.perf_counter()
    _ct(
        "diagnose",
        "--all",
        "--data-root",
        root,
        "--cache-dir",
        cache,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
    )
    return N_SERIES * 60.0 / (time.perf_counter() - started)


def _alternate(measure: Callable[[], float]) -> tuple[float, float]:
    """(best quiet, best contended) over alternating rounds."""
    quiet, contended = [], []
    for _ in range(ROUNDS):
        quiet.append(measure())
        with busy_processes(2):
            contended.append(measure())
    return max(quiet), max(contended)


def run() -> Section:
    with tempfile.TemporaryDirectory(prefix="ct-bench-contention-") as tmp:
        work = Path(tmp)
        root, cache = work / "data", work / "cache"
        _ct("synth", root, "--series", N_SERIES, "--size", "small", "--seed", 5)
        _ct("prepcache", "--data-root", root, "--cache-dir", cache)
        # models for diagnose: one short epoch each (their quality does not matter here)
        models = {}
        for task in ("seg", "cls"):
            models[task] = work / f"model-{task}"
            _ct(
                f"train-{task}",
                "--data-root",
                root,
                "--cache-dir",
                cache,
                "--out",
                models[task],
                "--epochs",
                1,
                "--epoch-size",
                64,
                "--val-every",
                99,
                "--val-stride",
                VAL_STRIDE,
            )
            models[task] = models[task] / "last.ckpt"
        runs = {
            "ct train-cls": ("samples/s", lambda: _train_rate("cls", root, cache, work)),
            "ct train-seg": ("samples/s", lambda: _train_rate("seg", root, cache, work)),
            "ct diagnose --all": ("series/min", lambda: _diagnose_rate(root, cache, work, models)),
        }
        figures = []
        for name, (unit, measure) in runs.items():
            quiet, contended = _alternate(measure)
            share = contended / quiet
            figures.append(
                Figure(
                    name=f"{name} beside two CPU-bound processes",
                    value=contended,
                    unit=unit,
                    baseline=quiet,
                    baseline_name="the same command alone",
                    ratio=share,
                    target=f">= {TARGET:.0%} of the quiet throughput (ratio >= {TARGET:.2f})",
                    met=share >= TARGET,
                )
            )
    return Section(
        key="contention",
        title="Throughput under contention (two CPU-bound processes beside the command)",
        command="make bench (python -m benchmarks.run contention)",
        setup=(
            f"{N_SERIES} `ct synth --size small` series, cache warm; each command as a user runs it (default "
            "threads: the thread budget of ct_pipeline.threads, OMP_WAIT_POLICY=PASSIVE from the CLI); train: the "
            "second of 2 epochs of 320 samples, 1 loader worker; diagnose: wall time of `ct diagnose --all` over "
            f"the {N_SERIES} series with briefly trained models; best of {ROUNDS} alternating quiet/contended rounds"
        ),
        expectation=(
            "a classifier step alone kept 40% of its speed beside two busy loops with libgomp's default "
            "(spinning) wait policy and 57% with PASSIVE; so about 50-60% for each command"
        ),
        figures=figures,
    )
