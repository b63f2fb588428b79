"""Two DDP ranks (gloo on the CPU) under torchrun: identical weights, one writer, metrics over both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ct_pipeline.models import build_model, load_checkpoint
from ct_pipeline.training.loop import WEIGHTS_HASH_DIR_ENV, weights_digest
from tests.training_data import write_training_luna

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_end_with_identical_weights_and_rank0_writes(tmp_path):
    data = write_training_luna(tmp_path / "luna")
    out = tmp_path / "run"
    hashes = tmp_path / "hashes"
    env = {
        **os.environ,
        WEIGHTS_HASH_DIR_ENV: str(hashes),
        "CT_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "cli", "train-cls", "--data-root", str(data), "--out", str(out), "--epochs", "1",
        "--epoch-size", "16", "--batch-size", "4", "--val-stride", "3", "--num-workers", "0", "--device", "cpu",
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rank0 = (hashes / "rank0.sha256").read_text().strip()
    rank1 = (hashes / "rank1.sha256").read_text().strip()
    assert rank0 == rank1  # gradients were averaged and BatchNorm buffers broadcast
    checkpoint = load_checkpoint(out / "last.ckpt", "cls")
    assert weights_digest(build_model(checkpoint)) == rank0
    # 16 samples in all: 2 steps of 4 on each of 2 ranks; validation counts both ranks' shares
    assert checkpoint.samples_seen == 16 and checkpoint.metrics["train"]["n"] == 16
    assert checkpoint.metrics["val"]["n"] == 22  # 2 validation series x (3 nodules + 8 others)
    # only rank 0 printed and wrote logs
    assert done.stdout.count("epoch 1/1 |") == 1
    assert len(list((out / "tensorboard" / "train").iterdir())) == 1
