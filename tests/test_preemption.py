"""Preemption: SIGTERM (what Slurm sends on preemption and time-out) stops a command cleanly.

The signals are real: the command runs as `python -m cli ...` in a subprocess, gets SIGTERM once
it is working, and must end with exit 143, an ``end: terminated by SIGTERM`` line in its log,
its finished results intact and no process of its own left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ct_pipeline.cache import CropCache
from ct_pipeline.models import load_checkpoint
from ct_pipeline.preemption import StopRequests, Terminated
from tests.helpers.cli_process import descendants, process_state, start_cli, wait_until
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.training_data import write_training_luna

_start = start_cli


def _lingering(pids: set[int], grace_s: float = 2.0) -> list[int]:
    """The processes of ``pids`` still alive ``grace_s`` after the command ended (one that is
    exiting when the command's own exit is seen needs a moment to be gone)."""
    deadline = time.monotonic() + grace_s
    while (alive := [pid for pid in pids if process_state(pid) not in (None, "Z")]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    wait_until(condition, process, "the signal", timeout_s)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list the command's processes")
def test_sigterm_stops_training_after_a_step_with_the_end_line_exit_143_and_no_process_left(tmp_path):
    root = write_training_luna(tmp_path / "luna")
    out = tmp_path / "run"
    process = _start(
        tmp_path,
        "train-cls",
        "--data-root",
        root,
        "--out",
        out,
        "--epochs",
        1000,
        "--epoch-size",
        64,
        "--batch-size",
        8,
        "--val-stride",
        3,
        "--val-every",
        1000,
        "--workers",
        2,
    )
    # Signal once the first epoch is checkpointed and its workers are up for the next one.
    _wait_for(lambda: (out / "last.ckpt").exists() and len(descendants(process.pid)) >= 2, process)
    workers = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("SIGTERM did not stop the training within 60 s")

    assert process.returncode == 143, err
    assert "terminated by SIGTERM" in err and "Traceback" not in err
    log_lines = (out / "logs" / "rank-0.log").read_text().splitlines()
    assert log_lines[-1].endswith("end: terminated by SIGTERM")
    assert not _lingering(workers), "DataLoader workers outlived the run"
    last = load_checkpoint(out / "last.ckpt", "cls")  # the last complete epoch, readable
    assert last.epoch >= 1


def test_stop_requests_turn_a_signal_into_terminated_at_the_next_check_and_restore_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.001)  # the handler runs between bytecodes of the main thread
        with pytest.raises(Terminated, match="^terminated by SIGTERM$") as raised:
            stop.check()
        assert raised.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def _terminate(process: subprocess.Popen, timeout_s: float = 60.0) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"SIGTERM did not stop the command within {timeout_s:.0f} s")
    return err


@pytest.mark.slow
def test_sigterm_stops_a_diagnose_batch_between_series_leaving_only_whole_results(tmp_path):
    root = tmp_path / "luna"
    uids = write_phantom_luna(root, 8)
    models = write_models(tmp_path / "models")
    out = tmp_path / "out"
    process = _start(
        tmp_path,
        "diagnose",
        "--all",
        "--data-root",
        root,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--concurrent-batches",
        1,
    )
    _wait_for(lambda: any(out.glob("1.*.json")), process)
    err = _terminate(process)

    assert process.returncode == 143, err
    finished = sorted(out.glob("1.*.json"))
    assert 1 <= len(finished) < len(uids)
    for path in finished:  # every result there is whole, no temporary file is left
        assert json.loads(path.read_text())["series_uid"] == path.name.removesuffix(".json")
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != ".ct-run.lock") == [
        p.name for p in finished
    ]
    log_lines = (out / "logs" / "diagnose.log").read_text().splitlines()
    assert log_lines[-1].endswith("end: terminated by SIGTERM")
    assert sum(" done 1." in line for line in log_lines) == len(finished)


@pytest.mark.slow
def test_sigterm_stops_prepcache_with_two_workers_after_the_series_in_progress(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=24, nodules_per_series=1, negatives_per_series=2)
    cache_dir = tmp_path / "cache"
    log_path = tmp_path / "prepcache.log"
    process = _start(
        tmp_path, "prepcache", "--data-root", root, "--cache-dir", cache_dir, "--workers", 2, "--log-file", log_path
    )
    _wait_for(lambda: log_path.exists() and " filled 1." in log_path.read_text(), process)
    workers = descendants(process.pid)
    err = _terminate(process)

    assert process.returncode == 143, err
    lines = log_path.read_text().splitlines()
    assert lines[-1].endswith("end: terminated by SIGTERM")
    filled = sum(" filled 1." in line for line in lines)
    assert 1 <= filled < 24
    assert not _lingering(workers), "worker processes outlived the command"
    cache = CropCache(cache_dir)
    try:
        assert cache.stats()["regions"] == filled  # every series it reported is stored, no other
    finally:
        cache.close()
