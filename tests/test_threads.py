"""The CPU thread budget: the allocation a command was given, in the documented order."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from ct_pipeline.errors import BadInputError
from ct_pipeline.threads import ThreadBudget, cgroup_cpu_quota, thread_budget
from ct_pipeline.training import TrainConfig, train
from tests.helpers.training_data import write_training_luna

AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cgroup_v2(tmp_path: Path, levels: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup v2 tree: ``levels`` maps a cgroup path (e.g. "job/step") to its cpu.max."""
    root = tmp_path / "cgroup"
    for path, cpu_max in levels.items():
        folder = root / path
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    deepest = max(levels, key=len)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{deepest}\n")
    return root, proc


def test_cgroup_v2_quota_is_the_smallest_on_the_way_to_the_root_rounded_up(tmp_path):
    root, proc = _cgroup_v2(tmp_path, {"job": "300000 100000", "job/step": "150000 100000"})
    assert cgroup_cpu_quota(root, proc) == 2  # 1.5 CPUs of quota: two threads can use it
    root, proc = _cgroup_v2(tmp_path / "b", {"job": "max 100000", "job/step": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None


def test_cgroup_v1_quota(tmp_path):
    mount = tmp_path / "cgroup" / "cpu,cpuacct" / "slurm"
    mount.mkdir(parents=True)
    (mount / "cpu.cfs_quota_us").write_text("400000\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:cpu,cpuacct:/slurm\n3:memory:/slurm\n")
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) == 4


def test_budget_order_flag_then_omp_then_the_least_of_slurm_cgroup_and_affinity(tmp_path):
    root, proc = _cgroup_v2(tmp_path, {"job": "100000 100000"})  # a 1-CPU quota
    unlimited, unlimited_proc = _cgroup_v2(tmp_path / "u", {"job": "max 100000"})

    def budget(environ, requested=None, cgroup=(unlimited, unlimited_proc)):
        return thread_budget(requested, environ, *cgroup)

    assert budget({"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "1"}, requested=AFFINITY).threads == 1  # capped
    assert budget({"OMP_NUM_THREADS": "1"}, requested=AFFINITY) == ThreadBudget(AFFINITY, "--threads")
    assert budget({"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": str(AFFINITY)}) == ThreadBudget(1, "OMP_NUM_THREADS")
    assert budget({}).threads == AFFINITY and budget({}).source == "affinity"
    slurm = budget({"SLURM_CPUS_PER_TASK": "1"})
    assert (slurm.threads, slurm.source) == (1, "SLURM_CPUS_PER_TASK")
    assert budget({"SLURM_CPUS_PER_TASK": str(AFFINITY + 8)}).threads == AFFINITY  # never more than it may run on
    quota = budget({}, cgroup=(root, proc))
    assert (quota.threads, quota.source) == (1, "cgroup cpu.max")
    assert quota.describe() == "cpu x1 threads (cgroup cpu.max)"
    assert quota.describe(2, "loader worker") == "cpu x1 threads (cgroup cpu.max), 2 loader workers x1"


def test_ranks_on_a_node_share_the_budget():
    shared = thread_budget(
        None, {"SLURM_CPUS_PER_TASK": "1", "LOCAL_WORLD_SIZE": "2"}, Path("/nonexistent"), Path("/nonexistent")
    )
    assert shared.threads == 1  # never below one
    if AFFINITY >= 4:
        assert thread_budget(None, {"LOCAL_WORLD_SIZE": "2"}).threads == AFFINITY // 2


@pytest.mark.parametrize(
    "environ, name",
    [({"OMP_NUM_THREADS": "zero"}, "OMP_NUM_THREADS"), ({"SLURM_CPUS_PER_TASK": "0"}, "SLURM_CPUS_PER_TASK")],
)
def test_bad_environment_values_are_named(environ, name):
    with pytest.raises(BadInputError, match=f"^{name} '[^']+': expected a whole number of CPU threads >= 1$"):
        thread_budget(None, environ, Path("/nonexistent"), Path("/nonexistent"))


def test_training_runs_on_its_budget_logs_it_once_and_restores_the_callers_threads(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=3)
    before = torch.get_num_threads()
    out = io.StringIO()
    config = TrainConfig.for_task(
        "cls",
        data_roots=(root,),
        out_dir=tmp_path / "run",
        epochs=1,
        epoch_size=8,
        batch_size=8,
        val_stride=3,
        workers=0,
        threads=1,
    )
    train(config, log_out=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "cpu x1 threads (--threads)"
    assert sum(line.startswith("cpu x") for line in lines) == 1
    assert torch.get_num_threads() == before
    log = (tmp_path / "run" / "logs" / "rank-0.log").read_text()
    assert "cpu x1 threads (--threads)" in log


def test_a_request_beyond_the_cpus_is_capped_there_with_one_warning(caplog):
    environ = {"SLURM_CPUS_PER_TASK": "1"}
    with caplog.at_level("WARNING"):
        flag = thread_budget(100000, environ, Path("/nonexistent"), Path("/nonexistent"))
        omp = thread_budget(None, {**environ, "OMP_NUM_THREADS": "64"}, Path("/nonexistent"), Path("/nonexistent"))
    assert flag == ThreadBudget(1, "--threads capped at SLURM_CPUS_PER_TASK")
    assert omp == ThreadBudget(1, "OMP_NUM_THREADS capped at SLURM_CPUS_PER_TASK")
    assert [r.getMessage() for r in caplog.records] == [
        "--threads 100000 is more than the 1 CPU this process may use (SLURM_CPUS_PER_TASK); using 1",
        "OMP_NUM_THREADS 64 is more than the 1 CPU this process may use (SLURM_CPUS_PER_TASK); using 1",
    ]
