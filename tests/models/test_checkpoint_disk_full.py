"""A disk that fills up while a checkpoint is written: one line, exit 2, the previous checkpoint kept (issue #26).

torch's zip writer reports the failed write as ``RuntimeError: [enforce fail at
inline_container.cc:672] . unexpected pos 704 vs 598`` without an errno; it used to end the run as
an internal error (exit 1).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ct_pipeline import atomic
from tests.helpers.cli_process import REPO, cli_env, run_ct
from tests.helpers.folder_digest import tree_digest
from tests.helpers.training_data import write_training_luna


def _train_args(root: Path, out: Path, epochs: int) -> list[str]:
    return [
        str(a)
        for a in (
            "train-cls",
            "--data-root",
            root,
            "--out",
            out,
            "--epochs",
            epochs,
            "--epoch-size",
            8,
            "--batch-size",
            8,
            "--val-stride",
            2,
            "--workers",
            0,
            "--device",
            "cpu",
            "--seed",
            3,
        )
    ]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error", "internal error", "Traceback"))]


@pytest.mark.slow
def test_torch_failing_to_write_a_checkpoint_on_a_full_disk_is_exit_2_and_last_ckpt_survives(tmp_path, monkeypatch):
    root = write_training_luna(tmp_path / "luna", n_series=4)
    out = tmp_path / "run"
    first = run_ct(*_train_args(root, out, 1))
    assert first.exit_code == 0, first.output
    before = tree_digest(root, out)
    assert out / "last.ckpt" in before

    real_save = torch.save

    def save_on_a_full_disk(payload, path, *args, **kwargs):
        real_save(payload, path, *args, **kwargs)
        with open(path, "r+b") as handle:  # what a full disk leaves: the first bytes of the file
            handle.truncate(598)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)  # what statvfs says once the write used it up
    result = run_ct(*_train_args(root, out, 2), "--resume")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.stderr) == [
        f"error: {out / 'last.ckpt'}: cannot write there (no space left on the device); free space, fix the "
        "permissions or choose another path"
    ]
    after = tree_digest(root, out)
    assert {path: after[path] for path in before if path.suffix == ".ckpt"} == {
        path: digest for path, digest in before.items() if path.suffix == ".ckpt"
    }  # last.ckpt and best.ckpt byte-identical
    logs = (out / "logs", out / "tensorboard")
    assert {path for path in after if not any(folder in path.parents for folder in logs)} == {
        path for path in before if not any(folder in path.parents for folder in logs)
    }  # and no temporary file left beside them
    assert {path: after[path] for path in before if root in path.parents} == {
        path: digest for path, digest in before.items() if root in path.parents
    }


_FULL_DISK_SCRIPT = r"""
import json, os, subprocess, sys
from pathlib import Path
mount, report = Path(sys.argv[1]), Path(sys.argv[2])
args = json.loads(sys.argv[3])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
from tests.helpers.folder_digest import tree_digest
first = subprocess.run([sys.executable, "-m", "cli", *args[0]], capture_output=True, text=True)
before = {str(path): digest for path, digest in tree_digest(mount / "run").items()}  # JSON keys are text
# Shrink the disk to what epoch 1 left plus a little: room for the log lines and TensorBoard
# events of epoch 2, none for its checkpoint (megabytes).
stats = os.statvfs(mount)
used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
subprocess.run(["mount", "-o", f"remount,size={used + 256 * 1024}", str(mount)], check=True)
second = subprocess.run([sys.executable, "-m", "cli", *args[1]], capture_output=True, text=True)
report.write_text(json.dumps({"first": [first.returncode, first.stderr], "second": [second.returncode, second.stderr],
                              "before": before, "after": {str(path): digest for path, digest in tree_digest(mount / "run").items()}}))
"""


@pytest.mark.slow
def test_a_real_full_disk_while_training_writes_its_checkpoint(tmp_path):
    """On a small tmpfs filled up after epoch 1 (needs an unprivileged user and mount namespace)."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode
        != 0
    ):
        pytest.skip("no user and mount namespaces here to mount a small file system in")
    import json

    root = write_training_luna(tmp_path / "luna", n_series=4)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    out = mount / "run"
    args = [_train_args(root, out, 1), [*_train_args(root, out, 2), "--resume"]]
    report = tmp_path / "report.json"
    env = cli_env(tmp_path)
    script = tmp_path / "full_disk.py"
    script.write_text(_FULL_DISK_SCRIPT)
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, script, mount, report, json.dumps(args)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    outcome = json.loads(report.read_text())
    assert outcome["first"][0] == 0, outcome["first"][1]
    assert outcome["second"][0] == 2, outcome["second"][1]
    assert _error_lines(outcome["second"][1]) == [
        f"error: {out / 'last.ckpt'}: cannot write there (no space left on the device); free space, fix the "
        "permissions or choose another path"
    ]
    before, after = outcome["before"], outcome["after"]
    assert {k: v for k, v in before.items() if k.endswith(".ckpt")} == {
        k: v for k, v in after.items() if k.endswith(".ckpt")
    }


@pytest.mark.parametrize(
    "code, reason", [(errno.ENOSPC, "no space left on the device"), (errno.EROFS, "read-only file system")]
)
def test_a_full_or_read_only_disk_met_anywhere_is_one_line_and_exit_2(tmp_path, monkeypatch, code, reason):
    """Writes that check for it say so themselves; one met elsewhere (TensorBoard's event file) is said the same way."""
    import ct_pipeline.loading

    event_file = tmp_path / "runs" / "events.out.tfevents.1"

    def full_disk(*_args, **_kwargs):
        raise OSError(code, os.strerror(code), str(event_file))

    monkeypatch.setattr(ct_pipeline.loading, "load_ct", full_disk)
    monkeypatch.setattr("ct_pipeline.loading.load_ct", full_disk)
    result = run_ct("info", tmp_path / "scan.mhd")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {event_file}: cannot write there ({reason}); free space, fix the permissions or choose another path"
    ]


def test_any_other_os_error_is_still_an_internal_error(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("ct_pipeline.loading.load_ct", broken)
    result = run_ct("info", tmp_path / "scan.mhd")
    assert result.exit_code == 1
    assert result.stderr.startswith("internal error: OSError:")
