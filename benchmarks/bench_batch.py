"""`ct diagnose --all` over 20 synthetic 512x512 series, against the same series one process each.

What a batch saves is what every process pays again: interpreter and library start-up, reading
and preparing the models. Both sides run the book's weights (imported as in the diagnose
benchmark) with their defaults; half of the one-by-one runs come before the batch and half
after, so that a change in the machine's load falls on both.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Figure, Section
from benchmarks.processes import ROOT, import_book_weights, measure

N_SERIES = 20


def _diagnose(data_root: Path, seg: Path, cls: Path, *series: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli",
        "diagnose",
        *series,
        "--data-root",
        str(data_root),
        "--seg-model",
        str(seg),
        "--cls-model",
        str(cls),
        "--json",
        "--quiet",
    ]


def run() -> Section:
    with tempfile.TemporaryDirectory(prefix="ct-bench-batch-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "synth",
                str(data),
                "--series",
                str(N_SERIES),
                "--size",
                "full",
                "--seed",
                "17",
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        uids = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))
        seg, cls = import_book_weights(Path(tmp))
        half = len(uids) // 2
        single = [measure(_diagnose(data, seg, cls, uid)) for uid in uids[:half]]
        batch = measure([*_diagnose(data, seg, cls), "--all"], json_output=False)
        single += [measure(_diagnose(data, seg, cls, uid)) for uid in uids[half:]]
    one_by_one_s = sum(r["wall_s"] for r in single)
    batch_s = batch["wall_s"]
    in_series_s = statistics.median(sum(r["result"]["timings_s"].values()) for r in single)
    overhead_s = statistics.median(r["wall_s"] - sum(r["result"]["timings_s"].values()) for r in single)
    n_batch = len([line for line in batch["stdout"].splitlines() if line.strip()])
    figures = [
        Figure(
            "ct diagnose --all",
            3600 * N_SERIES / batch_s,
            "CTs/hour",
            3600 * N_SERIES / one_by_one_s,
            f"the same {N_SERIES} series, one `ct diagnose UID` process each",
            one_by_one_s / batch_s,
            "",
            None,
            f"{batch_s:.0f} s for the batch ({n_batch} series reported) against {one_by_one_s:.0f} s one by one",
        ),
        Figure(
            "per series, inside the pipeline",
            batch_s / N_SERIES,
            "s",
            in_series_s,
            "the same stages in a one-by-one run (median)",
            in_series_s / (batch_s / N_SERIES),
            "",
            None,
            "the batch's wall time per series against load + the pipeline's stages of a one-by-one run: what is left "
            "after start-up is the networks' first batches, slower in a fresh process (oneDNN builds its kernels "
            "for each new input shape once per process)",
        ),
        Figure(
            "per process, outside the pipeline",
            overhead_s,
            "s",
            None,
            "",
            None,
            "",
            None,
            "median wall time of a one-by-one run less its stages: start-up, imports, reading the models, output; "
            "what the batch pays once",
        ),
        Figure(
            "peak resident memory of the batch",
            batch["peak_kib"] / 2**20,
            "GiB",
            max(r["peak_kib"] for r in single) / 2**20,
            "the largest one-by-one run",
            None,
            "",
            None,
            "one volume in memory at a time: the batch needs what its largest series needs",
        ),
    ]
    return Section(
        key="batch",
        title=f"ct diagnose --all over {N_SERIES} synthetic 512x512 series",
        command="make bench (python -m benchmarks.run batch)",
        setup=f"`ct synth --series {N_SERIES} --size full --seed 17` (512 x 512, 100-300 slices of 0.625-2.5 mm), the "
        "book's weights, default options (`--json --quiet`); the batch as one process against one process per "
        f"series, half of them before the batch and half after; {os.cpu_count()} cores",
        expectation="a few percent: the batch saves each series' ~3 s of start-up and model loading out of ~17 s; "
        "series run one after another in both",
        figures=figures,
    )
