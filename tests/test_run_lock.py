"""One run per output folder (#26): a second `ct train-cls`, `ct diagnose`, `ct demo` or
`benchmarks.quality` with the same --out is refused with the holder's pid while the first runs,
and runs once the holder is gone, even killed with -9."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ct_pipeline.models import load_checkpoint
from tests.helpers.cli_process import REPO, cli_env, process_state, run_ct, start_cli, wait_until
from tests.helpers.diagnosis_tiny import write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.training_data import write_training_luna


def _busy(folder: Path, pid: int) -> str:
    return f"error: --out {folder} is in use by another run (pid {pid}); wait for it to end or choose another --out"


def _lock_written(folder: Path, name: str = ".ct-run.lock"):
    return lambda: (folder / name).is_file() and (folder / name).read_text().strip().isdigit()


@contextlib.contextmanager
def _stopped(process: subprocess.Popen):
    """The holder paused (SIGSTOP) so that its folder holds still while another run tries it."""
    os.kill(process.pid, signal.SIGSTOP)
    # The signal lands between system calls: wait until the kernel reports it stopped (state T).
    wait_until(lambda: process_state(process.pid) == "T", process, "the stop", 10)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_training_luna(tmp_path_factory.mktemp("luna") / "data")


TRAIN = ("--epoch-size", 8, "--batch-size", 4, "--workers", 0, "--device", "cpu", "--val-stride", 3)


@pytest.mark.slow
def test_second_training_into_the_same_out_is_refused_and_a_killed_holder_leaves_it_resumable(tmp_path, data_root):
    run = tmp_path / "run"
    holder = start_cli(tmp_path, "train-cls", "--data-root", data_root, "--out", run, "--epochs", 500, *TRAIN)
    try:
        # The window of #26: the first run has started, but has no last.ckpt yet to warn the second off.
        wait_until(_lock_written(run), holder, "the lock", 60)
        with _stopped(holder):
            before = tree_digest(run, data_root)
            second = run_ct("train-cls", "--data-root", data_root, "--out", run, "--epochs", 500, "--seed", 5, *TRAIN)
            assert second.exit_code == 2, second.output
            assert second.stderr.splitlines() == [_busy(run, holder.pid)]
            assert tree_digest(run, data_root) == before
        wait_until(lambda: (run / "last.ckpt").is_file(), holder, "the end of the first epoch", 120)
    finally:
        _kill(holder)  # kill -9: the kernel drops the lock; the lock file stays, naming a dead pid
    assert (run / ".ct-run.lock").read_text().strip() == str(holder.pid)
    epochs_done = load_checkpoint(run / "last.ckpt", "cls").epoch
    resumed = run_ct(
        "train-cls", "--data-root", data_root, "--out", run, "--epochs", epochs_done + 1, "--resume", *TRAIN
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run / "last.ckpt", "cls").epoch == epochs_done + 1


@pytest.fixture()
def models(tmp_path):
    paths = write_models(tmp_path / "models", nodule_prob=0.8)
    return ("--seg-model", paths["seg"], "--cls-model", paths["cls"], "--concurrent-batches", 1)


def test_second_diagnose_into_the_same_out_is_refused_other_shards_run_and_a_killed_holder_is_no_obstacle(
    tmp_path, data_root, models
):
    out = tmp_path / "out"
    holder = start_cli(tmp_path, "diagnose", "--all", "--data-root", data_root, "--out", out, *models)
    try:
        wait_until(_lock_written(out), holder, "the lock", 60)
        with _stopped(holder):
            before = tree_digest(out, data_root)
            second = run_ct("diagnose", "--all", "--data-root", data_root, "--out", out, *models)
            assert second.exit_code == 2, second.output
            assert second.stderr.splitlines() == [_busy(out, holder.pid)]
            assert tree_digest(out, data_root) == before
            # array tasks share one --out: each shard has its own lock
            shard = run_ct("diagnose", "--all", "--data-root", data_root, "--out", out, "--shard", "1/2", *models)
            assert shard.exit_code == 0, shard.output
            assert (out / "findings.shard-1-of-2.csv").is_file()
    finally:
        _kill(holder)
    again = run_ct("diagnose", "--all", "--data-root", data_root, "--out", out, *models)
    assert again.exit_code == 0, again.output
    assert (out / "findings.csv").is_file()


# A stand-in holder for the commands that take minutes before they write anything worth a test.
_HOLD = textwrap.dedent(
    """
    import sys, time
    from ct_pipeline.run_lock import output_lock
    with output_lock(sys.argv[1], "--out"):
        print("held", flush=True)
        time.sleep(600)
    """
)


@contextlib.contextmanager
def _held(folder: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        _kill(process)


def test_second_demo_into_the_same_out_is_refused(tmp_path):
    demo = tmp_path / "demo"
    with _held(demo) as holder:
        before = tree_digest(demo)
        result = run_ct("demo", "--out", demo, "--scale", "tiny")
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [_busy(demo, holder.pid)]
        assert tree_digest(demo) == before


def test_second_quality_benchmark_into_the_same_out_is_refused(tmp_path, data_root):
    from benchmarks.quality import main

    out = tmp_path / "quality"
    with _held(out) as holder:
        before = tree_digest(out, data_root)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(["--data-root", str(data_root), "--out", str(out)])
        assert code == 2
        assert stderr.getvalue().splitlines() == [_busy(out, holder.pid)]
        assert tree_digest(out, data_root) == before


@pytest.mark.slow
def test_two_rank_training_into_a_held_out_is_refused_on_every_rank_without_waiting(tmp_path, data_root):
    """Rank 0 takes the lock for the run; every rank hears that it could not and ends, none waits at a barrier."""
    run = tmp_path / "run"
    env = {**cli_env(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "cli",
        "train-cls",
        "--data-root",
        str(data_root),
        "--out",
        str(run),
        "--epochs",
        "1",
        *map(str, TRAIN),
    ]
    with _held(run) as holder:
        before = tree_digest(run, data_root)
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert done.stderr.count(_busy(run, holder.pid)) == 2, done.stderr[-3000:]
        assert tree_digest(run, data_root) == before


def test_a_file_system_without_locks_warns_and_runs_unguarded(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from ct_pipeline.run_lock import output_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with output_lock(tmp_path / "out", "--out") as path:
        assert path == tmp_path / "out" / ".ct-run.lock"
    assert caplog.messages == [
        f"--out {tmp_path / 'out'}: cannot lock it (No locks available); running without the one-run-per-folder guard"
    ]
