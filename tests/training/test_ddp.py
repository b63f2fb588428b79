"""Two DDP ranks (gloo on the CPU) under torchrun: identical weights, one writer, metrics over both,
a log file per rank, and a run killed after its first epoch that resumes to the same weights.

Each rank's final weights digest comes from ``tests/helpers/ddp_train.py``, which runs `ct` and records them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ct_pipeline.cache import CropCache
from ct_pipeline.models import build_model, load_checkpoint
from ct_pipeline.training.epoch import weights_digest
from tests.helpers.cli_process import descendants, run_ct
from tests.helpers.training_data import write_training_luna

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 2


def _torchrun(data: Path, out: Path, hashes: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "tests.helpers.ddp_train",
        str(hashes),
        "train-cls",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--epoch-size",
        "16",
        "--batch-size",
        "4",
        "--val-stride",
        "3",
        "--workers",
        "0",
        "--device",
        "cpu",
        *extra,
    ]


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CT_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }


def _run(data, out, hashes, cache, *extra) -> subprocess.CompletedProcess:
    done = subprocess.run(
        _torchrun(data, out, hashes, cache, *extra),
        env=_env(cache),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One 2-rank run of EPOCHS epochs: (data root, cache dir, run folder, hash folder, finished process)."""
    tmp = tmp_path_factory.mktemp("ddp")
    data, cache = write_training_luna(tmp / "luna"), tmp / "cache"
    # Filled first, as on a cluster (prepcache, then train), so that the run below reads the cache
    # and the check after it can tell that training filled nothing.
    filled = run_ct("prepcache", "--data-root", str(data), "--cache-dir", str(cache))
    assert filled.exit_code == 0, filled.output
    regions = _regions(cache)
    done = _run(data, tmp / "run", tmp / "hashes", cache)
    assert _regions(cache) == regions > 0  # training read what prepcache filled, and filled nothing
    return data, cache, tmp / "run", tmp / "hashes", done


def _regions(cache_dir: Path) -> int:
    cache = CropCache(cache_dir)
    try:
        return cache.stats()["regions"]
    finally:
        cache.close()


def _epoch_lines(log: Path) -> list[str]:
    """The epoch lines of a rank's log, without timestamp and timing (``epoch 1/2 | ... | val ...``)."""
    lines = [line.split(" INFO: ", 1)[1] for line in log.read_text().splitlines() if " INFO: epoch " in line]
    return [line.rsplit(" | ", 1)[0] for line in lines if " | " in line]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_end_with_identical_weights_and_rank0_writes(uninterrupted):
    _, _, out, hashes, done = uninterrupted
    rank0 = (hashes / "rank0.sha256").read_text().strip()
    rank1 = (hashes / "rank1.sha256").read_text().strip()
    assert rank0 == rank1  # gradients were averaged and BatchNorm buffers broadcast
    checkpoint = load_checkpoint(out / "last.ckpt", "cls")
    assert weights_digest(build_model(checkpoint)) == rank0
    # 16 samples an epoch: 2 steps of 4 on each of 2 ranks; validation counts both ranks' shares
    assert checkpoint.samples_seen == 16 * EPOCHS and checkpoint.metrics["train"]["n"] == 16
    assert checkpoint.metrics["val"]["n"] == 22  # 2 validation series x (3 nodules + 8 others)
    # only rank 0 printed and wrote TensorBoard logs
    assert done.stdout.count("epoch 1/2 |") == 1 and done.stdout.count("epoch 2/2 |") == 1
    assert len(list((out / "tensorboard" / "train").iterdir())) == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_rank_appends_its_own_log_file(uninterrupted):
    _, _, out, _, done = uninterrupted
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs == ["rank-0.log", "rank-1.log"]
    per_rank = [(out / "logs" / name).read_text() for name in logs]
    for rank, text in enumerate(per_rank):
        assert all(f" rank {rank} " in line for line in text.splitlines())
        assert text.count(" INFO: start: rank ") == 1 and text.rstrip().endswith("INFO: end: ok")
    # the same reduced metrics on both ranks, and the same as the console's lines
    lines = [_epoch_lines(out / "logs" / name) for name in logs]
    assert len(lines[0]) == EPOCHS and lines[0] == lines[1]
    assert all(line in done.stdout for line in lines[0])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_two_rank_run_resumes_to_the_weights_of_the_uninterrupted_run(uninterrupted, tmp_path):
    data, cache, whole, whole_hashes, _ = uninterrupted
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    launcher = subprocess.Popen(
        _torchrun(data, out, hashes, cache),
        env=_env(cache),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 100
        while not (out / "last.ckpt").exists():  # written atomically: it exists once epoch 1 is saved
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before epoch 1's checkpoint"
            time.sleep(0.005)
        # Kill both ranks at once, as a node failure or the scheduler's SIGKILL would
        workers = _children(launcher.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert launcher.wait(timeout=60) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    killed = load_checkpoint(out / "last.ckpt", "cls")
    assert killed.epoch == 1, "epoch 2 finished before the kill: make the epochs longer"
    assert not hashes.exists()  # no rank got to the end

    _run(data, out, hashes, cache, "--resume")
    a = load_checkpoint(whole / "last.ckpt", "cls")
    b = load_checkpoint(out / "last.ckpt", "cls")
    assert (b.epoch, b.samples_seen) == (a.epoch, a.samples_seen) == (EPOCHS, 16 * EPOCHS)
    for name in a.model_state:
        assert torch.equal(a.model_state[name], b.model_state[name]), name
    assert a.metrics == b.metrics
    assert (hashes / "rank0.sha256").read_text() == (hashes / "rank1.sha256").read_text()
    assert (hashes / "rank0.sha256").read_text() == (whole_hashes / "rank0.sha256").read_text()
    # the resumed run added to each rank's log: two starts, the kill left no end line
    for rank in (0, 1):
        text = (out / "logs" / f"rank-{rank}.log").read_text()
        assert text.count("INFO: start: rank") == 2 and text.count("INFO: end: ok") == 1
        assert f"resuming {out} after epoch 1" in text
        assert [line.split(" |")[0] for line in _epoch_lines(out / "logs" / f"rank-{rank}.log")] == [
            "epoch 1/2",
            "epoch 2/2",
        ]


def _children(pid: int) -> list[int]:
    """The training processes torchrun ``pid`` started (Linux /proc)."""
    return [c for c in descendants(pid, direct=True) if b"train-cls" in Path(f"/proc/{c}/cmdline").read_bytes()]
