"""The example sbatch scripts parse, and render the commands we document when run with example values."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = ROOT / "cli" / "slurm"
SCRIPTS = sorted(SLURM_DIR.glob("*.sbatch"))


def test_there_is_an_example_per_job_kind():
    assert [p.name for p in SCRIPTS] == [
        "diagnose_array.sbatch",
        "prepcache_array.sbatch",
        "train_cls.sbatch",
        "train_seg.sbatch",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_each_job_keeps_slurm_output_per_job_and_task():
    for script in SCRIPTS:
        options = re.findall(r"^#SBATCH (\S+)$", script.read_text(), flags=re.MULTILINE)
        array = any(option.startswith("--array=") for option in options)
        assert f"--output=%x-{'%A_%a' if array else '%j'}.out" in options, script.name
        if "--requeue" in options:  # a requeued job keeps its job id: add to the file, do not truncate it
            assert "--open-mode=append" in options, script.name


def _render(tmp_path, script, extra_env=None, runs=None):
    """Run ``script`` with stand-ins for srun/torchrun/ct/scontrol that print their arguments.

    As sbatch does, the script runs as a copy in a spool folder, from the folder it was submitted from.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("srun", "torchrun", "ct"):
        stub = bin_dir / name
        stub.write_text(
            f'#!/bin/bash\necho "{name} $*"\n' if name != "srun" else '#!/bin/bash\necho -n "srun "; "$@"\n'
        )
        stub.chmod(0o755)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node001; echo node002\n")
    (bin_dir / "scontrol").chmod(0o755)
    runs = runs or tmp_path / "runs"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "scratch"),
        "USER": "alice",
        "CT_RUNS": str(runs),
        "CT_VENV": str(tmp_path / "no-venv"),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[001-002]",
        "SLURM_NNODES": "2",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_ARRAY_TASK_COUNT": "16",
        **(extra_env or {}),
    }
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    shutil.copy(script, spool / "slurm_script")
    env.setdefault("SLURM_SUBMIT_DIR", str(ROOT))
    result = subprocess.run(["bash", str(spool / "slurm_script")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_prepcache_array_renders_its_shard_and_node_local_cache(tmp_path):
    out = _render(tmp_path, SLURM_DIR / "prepcache_array.sbatch")
    assert out == f"ct prepcache --workers 4 --shard 3/16 --log-file {tmp_path}/runs/logs/prepcache-shard-3-of-16.log"
    assert (tmp_path / "scratch" / "ct-cache-alice").is_dir()


def test_diagnose_array_renders_its_shard(tmp_path):
    out = _render(tmp_path, SLURM_DIR / "diagnose_array.sbatch")
    runs = tmp_path / "runs"
    assert out == (
        f"ct diagnose --all --shard 3/16 --out {runs}/findings --seg-model {runs}/train-seg/best.ckpt "
        f"--cls-model {runs}/train-cls/best.ckpt --device auto"
    )


def test_train_cls_uses_torchrun_rendezvous_and_resumes_after_requeue(tmp_path):
    out = _render(tmp_path, SLURM_DIR / "train_cls.sbatch")
    assert out.startswith(
        "srun torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=node001:29500 --rdzv-id=4242 -m cli train-cls"
    )
    assert "--resume" not in out
    (tmp_path / "runs" / "train-cls").mkdir(parents=True)
    (tmp_path / "runs" / "train-cls" / "last.ckpt").write_bytes(b"x")
    assert _render(tmp_path, SLURM_DIR / "train_cls.sbatch").endswith("--resume")


def test_train_seg_is_single_node_torchrun(tmp_path):
    out = _render(tmp_path, SLURM_DIR / "train_seg.sbatch", {"GPUS_PER_NODE": "2"})
    assert out.startswith("torchrun --standalone --nproc-per-node=2 -m cli train-seg --out")
