"""Thread and worker counts beyond the CPUs are capped with one warning line (issue #26), through the CLI.

`ct diagnose --threads 100000` used to crash in OpenMP (exit 139, nothing on stderr), so these run
`ct` in a subprocess of its own, as a user's shell would.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ct_pipeline.threads import cpu_limit
from tests.helpers.cli_process import REPO, cli_env
from tests.helpers.diagnosis_tiny import NODULES_IRC, write_models, write_phantom_luna
from tests.helpers.tiny_luna import SERIES, write_tiny_luna


def _ct(tmp_path, *args: object, omp_num_threads: str | None = None) -> subprocess.CompletedProcess:
    env = cli_env(tmp_path)
    env.pop("OMP_NUM_THREADS", None)
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = omp_num_threads
    return subprocess.run(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _too_many(option: str) -> int:
    """--threads: the count that crashed OpenMP; worker counts: one more than the CPUs (100000
    worker processes or threads would swamp the machine should the cap ever be lost)."""
    return 100000 if option in ("--threads", "OMP_NUM_THREADS") else cpu_limit().threads + 1


def _warning(option: str, requested: int) -> str:
    limit = cpu_limit()
    cpus = f"{limit.threads} CPU{'s' if limit.threads > 1 else ''}"
    return f"WARNING: {option} {requested} is more than the {cpus} this process may use ({limit.source}); using {limit.threads}"


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--threads", "--concurrent-batches", "OMP_NUM_THREADS"])
def test_diagnose_caps_threads_and_workers_beyond_the_cpus_with_one_warning(option, tmp_path):
    models = write_models(tmp_path / "models", nodule_prob=0.8)
    root = tmp_path / "luna"
    (uid,) = write_phantom_luna(root, 1)
    args = [
        "diagnose",
        uid,
        "--data-root",
        root,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--json",
        "--quiet",
    ]
    if option == "OMP_NUM_THREADS":  # OpenMP gave each batch thread that many: it crashed as --threads did
        result = _ct(tmp_path, *args, omp_num_threads=str(_too_many("--threads")))
    else:
        result = _ct(tmp_path, *args, option, _too_many(option))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("using --seg-model")] == [
        _warning(option, _too_many(option))
    ]
    record = json.loads(result.stdout)
    assert sorted(tuple(c["center_irc"]) for c in record["candidates"]) == sorted(NODULES_IRC)


@pytest.mark.slow
def test_prepcache_caps_workers_beyond_the_cpus_with_one_warning(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    result = _ct(tmp_path, "prepcache", "--data-root", root, "--workers", _too_many("--workers"))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("WARNING")] == [
        _warning("--workers", _too_many("--workers"))
    ]
    assert f"{len(SERIES)} series" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--threads", "--workers"])
def test_training_caps_threads_and_loader_workers_beyond_the_cpus_with_one_warning(option, tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    out = tmp_path / "run"
    result = _ct(
        tmp_path,
        "train-cls",
        "--data-root",
        root,
        "--out",
        out,
        "--epochs",
        1,
        "--epoch-size",
        4,
        "--batch-size",
        4,
        "--val-stride",
        2,
        "--device",
        "cpu",
        *(["--workers", 0] if option == "--threads" else []),
        option,
        _too_many(option),
    )
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("WARNING")] == [
        _warning(option, _too_many(option))
    ]
    assert (out / "last.ckpt").is_file()


@pytest.mark.slow
def test_hard_negatives_and_compare_cap_threads_beyond_the_cpus_with_one_warning(tmp_path):
    models = write_models(tmp_path / "models", nodule_prob=0.8)
    root = write_tiny_luna(tmp_path / "luna")
    mined = _ct(
        tmp_path,
        "hard-negatives",
        "--data-root",
        root,
        "--seg-model",
        models["seg"],
        "--val-stride",
        2,
        "--out",
        tmp_path / "hard.csv",
        "--threads",
        100000,
    )
    assert mined.returncode == 0, mined.stderr
    # (its coded test volumes also draw a warning about their lungs)
    assert [line for line in mined.stderr.splitlines() if "CPU" in line] == [_warning("--threads", 100000)]
    assert (tmp_path / "hard.csv").read_text().startswith("seriesuid,coordX,coordY,coordZ,class")
    # Two phantom chests: diagnosed under the capped budget, then refused by the registration
    # (the phantom has no chest wall around its lungs): the command's own answer, not a crash.
    phantoms = tmp_path / "phantoms"
    prior, current = write_phantom_luna(phantoms, 2)
    compared = _ct(
        tmp_path,
        "compare",
        prior,
        current,
        "--data-root",
        phantoms,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--threads",
        100000,
        "--json",
    )
    assert compared.returncode == 2, compared.stderr
    lines = compared.stderr.splitlines()
    assert [line for line in lines if line.startswith("WARNING")] == [_warning("--threads", 100000)]
    assert lines[-1] == "error: PRIOR: no lungs found (no enclosed air below -400 HU); is it a chest CT?"
    assert any(line.endswith(": registration") for line in lines)  # both scans were diagnosed first
