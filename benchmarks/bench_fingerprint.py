"""What the content fingerprint of a series' files costs, against a diagnosis of that series.

A result in ``ct diagnose --out`` (or ``ct compare --prior-results``) is reused only when the
SHA-256 of every file the loader reads matches the one it records. The fingerprint is taken
before a re-run's load and again after a diagnosis, both times over bytes the loader reads
anyway, so the extra cost is hashing warm files; the target is under 5 % of a diagnosis.

Measured on the real CT (99 DICOM slices of 512 x 512) and on a synthetic 512 x 512 series
written as DICOM, each diagnosed once with the book's weights in a fresh process (`ct diagnose
SRC --json`), the hash timed in this process (median of 5, after one first read). The crop
cache keys on names, sizes and mtimes instead; the projected time to hash all of LUNA16 at the
measured rate says why (see ct_pipeline/prepcache.py key_for).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, Section, best_time
from benchmarks.processes import SHARED, import_book_weights, measure
from ct_pipeline.loading import entry_files, find_entry
from ct_pipeline.loading.fingerprint import content_fingerprint
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset

TARGET_SHARE = 0.05
LUNA16_BYTES = 120e9  # the ten subsets as unpacked .mhd/.raw (888 series)


def _case(name: str, source: Path, seg: Path, cls: Path) -> tuple[list[Figure], float]:
    """Figures for one series, and its hashing rate in MB/s."""
    files = entry_files(find_entry(source))
    n_bytes = sum(os.path.getsize(f) for f in files)
    started = time.perf_counter()
    content_fingerprint(files)  # the first read: from disk unless the page cache has it
    first_s = time.perf_counter() - started
    hash_s = best_time(lambda: content_fingerprint(files), repeat=5, warmup=0)
    run = measure(
        [
            sys.executable,
            "-m",
            "cli",
            "diagnose",
            str(source),
            "--json",
            "--quiet",
            "--seg-model",
            str(seg),
            "--cls-model",
            str(cls),
        ]
    )
    share = hash_s / run["wall_s"]
    figures = [
        Figure(
            f"{name}: content fingerprint, share of a diagnosis",
            100 * share,
            "%",
            run["wall_s"],
            "s of `ct diagnose SRC --json` (fresh process)",
            None,
            "< 5 %",
            share < TARGET_SHARE,
            f"{len(files)} files, {n_bytes / 1e6:.0f} MB hashed in {hash_s * 1e3:.0f} ms warm "
            f"({first_s * 1e3:.0f} ms on the first read)",
        ),
    ]
    return figures, n_bytes / 1e6 / hash_s


def run() -> Section:
    real = SHARED / "data" / "dicom" / "C3N-00247-chest-ct"
    figures: list[Figure] = []
    rates = []
    with tempfile.TemporaryDirectory(prefix="ct-bench-fingerprint-") as tmp:
        seg, cls = import_book_weights(Path(tmp))
        if real.is_dir():
            found, rate = _case("real CT C3N-00247 (99 slices)", real, seg, cls)
            figures += found
            rates.append(rate)
        out = Path(tmp) / "synth"
        write_synthetic_dataset(SynthConfig(n_series=1, seed=17, size="full", dicom=True, out_dir=out))
        (series,) = sorted((out / "dicom").iterdir())
        found, rate = _case("synthetic 512x512 DICOM series", series, seg, cls)
        figures += found
        rates.append(rate)
    rate = min(rates)
    figures.append(
        Figure(
            "hashing all of LUNA16 at that rate (why the crop cache keys on sizes and mtimes)",
            LUNA16_BYTES / 1e6 / rate,
            "s",
            None,
            "",
            None,
            "",
            None,
            f"{rate:.0f} MB/s warm SHA-256 (the slower case); from disk it is the disk's rate, at every training start",
        )
    )
    return Section(
        key="fingerprint",
        title="Content fingerprint of a series' files against a diagnosis",
        command="python -m benchmarks.run fingerprint",
        setup="the real CT C3N-00247 and one `ct synth --size full --dicom --seed 17` series; the book's weights; "
        "SHA-256 of every file the loader reads (hashlib.file_digest), median of 5 warm, against one `ct diagnose` "
        "of the same series in a fresh process, in the same run; 2 cores shared",
        expectation="well under 1 %: hashing runs at GB/s, a diagnosis reads the same 50-150 MB and runs two networks",
        figures=figures,
    )
