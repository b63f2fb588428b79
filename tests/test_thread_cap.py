"""Thread and worker counts beyond the CPUs are capped with one warning line (issue #26), through the CLI.

`ct diagnose --threads 100000` used to crash in OpenMP (exit 139, nothing on stderr), so these run
`ct` in a subprocess of its own, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ct_pipeline.threads import cpu_limit
from tests.cli_process import REPO
from tests.diagnosis_tiny import NODULES_IRC, write_models, write_phantom_luna
from tests.tiny_luna import SERIES, write_tiny_luna


def _ct(tmp_path, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _warning(option: str, requested: int) -> str:
    limit = cpu_limit()
    cpus = f"{limit.threads} CPU{'s' if limit.threads > 1 else ''}"
    return f"WARNING: {option} {requested} is more than the {cpus} this process may use ({limit.source}); using {limit.threads}"


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--threads", "--workers"])
def test_diagnose_caps_threads_and_workers_beyond_the_cpus_with_one_warning(option, tmp_path):
    models = write_models(tmp_path / "models", nodule_prob=0.8)
    root = tmp_path / "luna"
    (uid,) = write_phantom_luna(root, 1)
    result = _ct(
        tmp_path, "diagnose", uid, "--data-root", root, "--seg-model", models["seg"], "--cls-model", models["cls"],
        option, 100000, "--json", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("using --seg-model")] == [
        _warning(option, 100000)
    ]
    record = json.loads(result.stdout)
    assert sorted(tuple(c["center_irc"]) for c in record["candidates"]) == sorted(NODULES_IRC)


@pytest.mark.slow
def test_prepcache_caps_workers_beyond_the_cpus_with_one_warning(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    result = _ct(tmp_path, "prepcache", "--data-root", root, "--workers", 100000)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("WARNING")] == [_warning("--workers", 100000)]
    assert f"{len(SERIES)} series" in result.stdout + result.stderr
