"""The CPU threads a command may use: the allocation it was given, not the machine's core count.

On a cluster a job gets a few cores of a big node, and torch's default (one thread per core it
can see) then runs many more threads than the job has CPUs: they spin at OpenMP barriers while
the scheduler runs someone else, and throughput collapses far below the fair share (measured:
``ct train-cls`` at 1-2 samples/s of ~50 beside four CPU-bound processes).

The budget, first rule that applies:

1. ``--threads N`` on the command line;
2. ``OMP_NUM_THREADS`` in the environment (an explicit choice of the user or the batch system);
3. otherwise the smallest of: ``SLURM_CPUS_PER_TASK``, the cgroup's CPU quota (``cpu.max`` in
   cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1, rounded up) and the CPUs this
   process may run on (``os.sched_getaffinity``).

A request (``--threads``, ``OMP_NUM_THREADS``, or a count of parallel workers) beyond the CPUs of
rule 3 is capped there with one warning: more threads than CPUs only wait for each other (``ct
diagnose --threads 1000`` ran 14x slower than ``--threads 2`` on 2 cores), and OpenMP crashes the
process when asked for 100000 (exit 139, nothing on stderr).

Under torchrun the budget is shared by the ranks on the node (``LOCAL_WORLD_SIZE``). Worker
processes and worker threads get one intra-op thread each. A training process keeps the whole
budget for itself beside its DataLoader workers: they mostly wait (a crop is a copy out of the
cache), and taking a thread from the main process cost 40% of the training speed on 2 cores
(train-cls 19 vs 33 samples/s with 1 and 2 main threads and one worker).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.errors import BadInputError
from ct_pipeline.preemption import ignore_stop_signals

# libgomp (torch's OpenMP on Linux) lets idle threads spin for a while before sleeping; beside
# other busy processes that spinning takes the CPU from the thread everyone waits for. PASSIVE
# makes them sleep at once: a classifier step kept 57% of its quiet speed beside two busy loops,
# against 40% with the default policy, and was as fast when alone (BENCHMARKS.md, contention).
# Read when torch is loaded, so it only takes effect when set before that (the CLI does).
OMP_WAIT_POLICY = "PASSIVE"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadBudget:
    """How many CPU threads this process may keep busy, and which rule said so.

    Attributes:
        threads: the budget (>= 1).
        source: the rule that set it, e.g. ``"--threads"``, ``"OMP_NUM_THREADS"``, ``"affinity"``.
    """

    threads: int
    source: str

    def describe(self, workers: int = 0, worker_kind: str = "worker") -> str:
        """e.g. ``cpu x2 threads (affinity)`` or ``cpu x4 threads (SLURM_CPUS_PER_TASK), 1 loader worker x1``."""
        text = f"cpu x{self.threads} threads ({self.source})"
        if workers > 0:
            text += f", {workers} {worker_kind}{'s' if workers > 1 else ''} x1"
        return text


def thread_budget(
    requested: int | None = None,
    environ: dict[str, str] | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
) -> ThreadBudget:
    """The budget by the rules of the module docstring (``environ`` defaults to ``os.environ``).

    A ``requested`` or ``OMP_NUM_THREADS`` count above the CPUs of rule 3 is capped there, with
    one warning line.

    Raises:
        BadInputError: ``requested`` or an environment variable is not a whole number >= 1.
    """
    env = os.environ if environ is None else environ
    if requested is not None:
        number = _positive(requested, "--threads")
        return _capped(number, "--threads", cpu_limit(env, cgroup_root, proc_self_cgroup))
    if env.get("OMP_NUM_THREADS", "").strip():
        # OpenMP reads it per process, so under torchrun it is already per rank.
        number = _positive(env["OMP_NUM_THREADS"].split(",")[0], "OMP_NUM_THREADS")
        return _capped(number, "OMP_NUM_THREADS", cpu_limit(env, cgroup_root, proc_self_cgroup))
    return cpu_limit(env, cgroup_root, proc_self_cgroup)


def cpu_limit(
    environ: dict[str, str] | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
) -> ThreadBudget:
    """The CPUs this process may keep busy by rule 3 alone (affinity, cgroup quota, Slurm), per rank.

    Raises:
        BadInputError: ``LOCAL_WORLD_SIZE`` or ``SLURM_CPUS_PER_TASK`` is not a whole number >= 1.
    """
    env = os.environ if environ is None else environ
    local_ranks = _positive(env.get("LOCAL_WORLD_SIZE", "1"), "LOCAL_WORLD_SIZE")
    limits = [(_affinity_cpus(), "affinity")]
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        limits.append((quota, "cgroup cpu.max"))
    if env.get("SLURM_CPUS_PER_TASK", "").strip():
        limits.append((_positive(env["SLURM_CPUS_PER_TASK"], "SLURM_CPUS_PER_TASK"), "SLURM_CPUS_PER_TASK"))
    threads, source = min(limits, key=lambda limit: limit[0])
    if local_ranks > 1:
        return ThreadBudget(max(1, threads // local_ranks), f"{source} / {local_ranks} ranks")
    return ThreadBudget(threads, source)


def cap_omp_num_threads(environ: dict[str, str] | None = None) -> None:
    """Lower ``OMP_NUM_THREADS`` in ``environ`` (default ``os.environ``) to the CPUs, with one warning.

    Call it before torch is loaded: OpenMP gives every new thread (a diagnosis batch thread, say)
    that many threads of its own, whatever ``torch.set_num_threads`` said in the main thread, and
    100000 of them crash the process. A value that is not a number is left for :func:`thread_budget`
    to refuse, in the commands that use it.
    """
    env = os.environ if environ is None else environ
    if not env.get("OMP_NUM_THREADS", "").strip():
        return
    try:
        budget = thread_budget(None, env)
    except BadInputError:
        return
    if budget.source != "OMP_NUM_THREADS":
        env["OMP_NUM_THREADS"] = str(budget.threads)


def capped_workers(requested: int, option: str, environ: dict[str, str] | None = None) -> int:
    """``requested`` parallel workers (threads or processes, one CPU each), capped at the CPUs of
    :func:`cpu_limit` with one warning line naming ``option``.

    Raises:
        BadInputError: ``requested`` is not a whole number >= 1.
    """
    return _capped(_positive(requested, option), option, cpu_limit(environ)).threads


def _capped(number: int, source: str, limit: ThreadBudget) -> ThreadBudget:
    if number <= limit.threads:
        return ThreadBudget(number, source)
    cpus = f"{limit.threads} CPU{'s' if limit.threads > 1 else ''}"
    log.warning(
        "%s %d is more than the %s this process may use (%s); using %d",
        source,
        number,
        cpus,
        limit.source,
        limit.threads,
    )
    return ThreadBudget(limit.threads, f"{source} capped at {limit.source}")


def cgroup_cpu_quota(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """CPUs allowed by this process's cgroup quota (rounded up), or None when unlimited or unknown.

    Every level from the process's own cgroup up to the root counts: the smallest quota holds.
    """
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = Path(path.lstrip("/"))
        if controllers == "":  # cgroup v2: "0::/path"
            quotas += _quotas_up(cgroup_root, relative, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            for mount in (cgroup_root / controllers, cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"):
                if mount.is_dir():
                    quotas += _quotas_up(mount, relative, _v1_quota)
                    break
    return max(1, math.ceil(min(quotas))) if quotas else None


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n_threads)`` and restore the old value (None: unchanged)."""
    import torch

    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def configure_worker_threads(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: one intra-op thread, and stopping is the main process's call.

    The worker ignores SIGTERM/SIGUSR1: a batch system signals every process of the job, and a
    worker that died of it would make the main process fail with "worker exited unexpectedly"
    instead of stopping cleanly (:mod:`ct_pipeline.preemption`); the main process then shuts
    the workers down itself.
    """
    import torch

    torch.set_num_threads(1)
    ignore_stop_signals()


def _quotas_up(root: Path, relative: Path, read) -> list[float]:
    quotas = []
    folder = root / relative
    while True:
        quota = read(folder)
        if quota is not None:
            quotas.append(quota)
        if folder == root or root not in folder.parents:
            return quotas
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _affinity_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _positive(value: int | str, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise BadInputError(f"{name} {value!r}: expected a whole number of CPU threads >= 1")
    return number
