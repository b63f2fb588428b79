"""Timing whole commands: each run a fresh process, measured from a small wrapper process.

The wrapper has one child, so ``resource.getrusage(RUSAGE_CHILDREN)`` in it is that run's CPU
time and peak resident memory (of its largest process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CT_SHARED_DIR", ROOT.parent / "shared"))
SEG_STATE = "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS_STATE = "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"

# Runs `argv`, then prints its wall time, CPU times and peak RSS.
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": done.returncode, "wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                  "peak_kib": usage.ru_maxrss, "stdout": done.stdout, "stderr": done.stderr[-2000:]}))
"""


def measure(argv: list[str], cwd: Path = ROOT, json_output: bool = True) -> dict:
    """Run ``argv``; its wall_s, user_s, sys_s, peak_kib, and ``result`` (its first stdout line as
    JSON) or ``stdout``. Raises RuntimeError when it fails."""
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv], stdout=subprocess.PIPE, text=True, check=True, cwd=cwd
    )
    record = json.loads(out.stdout)
    if record["rc"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({record['rc']}): {record['stderr']}")
    if json_output:
        record["result"] = json.loads(record.pop("stdout").strip().splitlines()[0])
    return record


def import_book_weights(tmp: Path) -> tuple[Path, Path]:
    """The book's two checkpoints in ``../shared``, imported with `ct models import-book` into ``tmp``."""
    weights = SHARED / "data" / "book-weights"
    seg, cls = tmp / "seg.ckpt", tmp / "cls.ckpt"
    for kind, state, path in (("seg", SEG_STATE, seg), ("cls", CLS_STATE, cls)):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "models",
                "import-book",
                str(weights / state),
                "--kind",
                kind,
                "-o",
                str(path),
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    return seg, cls
