"""`--device` names a device this torch build and machine have, or the command refuses in one line (issue #26).

`--device mps` on a build without MPS was torch's raw error (exit 1); a GPU index beyond the GPUs,
or a torch device type the pipeline does not run on, failed the same way deep in the work.
"""

from __future__ import annotations

import pytest
import torch

from ct_pipeline.devices import available_devices
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.folder_digest import tree_digest
from tests.helpers.tiny_luna import write_tiny_luna


def _expected(device: str) -> str:
    if device == "meta":  # a torch device, but not one ct runs on: refused by its spelling, before torch loads
        return "error: --device 'meta' is not a device ct runs on; use cpu, cuda, cuda:N, mps or auto"
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "mps":
        why = (
            "this machine has no Apple GPU" if torch.backends.mps.is_built() else "this torch build has no MPS support"
        )
    elif n_gpus == 0:
        why = "torch sees no GPU here"
    else:
        why = f"torch sees {n_gpus} GPU{'s' if n_gpus > 1 else ''} here"
    return (
        f"error: --device {device}: {why}; this machine has {', '.join(available_devices())}: use one of them or auto"
    )


@pytest.fixture()
def setup(tmp_path):
    models = write_models(tmp_path / "models", nodule_prob=0.8)
    root = tmp_path / "luna"
    uids = write_phantom_luna(root, 2)
    return tmp_path, models, root, uids


@pytest.mark.parametrize("device", ["mps", "cuda:7", "meta"])
@pytest.mark.parametrize("command", ["diagnose", "compare", "hard-negatives"])
def test_a_device_this_machine_lacks_is_one_line_exit_2_and_nothing_written(setup, command, device):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    tmp_path, models, root, uids = setup
    out = tmp_path / "out"
    if command == "diagnose":
        args = [
            "diagnose",
            uids[0],
            "--data-root",
            root,
            "--seg-model",
            models["seg"],
            "--cls-model",
            models["cls"],
            "--out",
            out,
        ]
    elif command == "compare":
        args = [
            "compare",
            uids[0],
            uids[1],
            "--data-root",
            root,
            "--seg-model",
            models["seg"],
            "--cls-model",
            models["cls"],
            "--report",
            out,
        ]
    else:
        root = write_tiny_luna(tmp_path / "tables")  # it mines the training series of the LUNA16 tables
        args = ["hard-negatives", "--data-root", root, "--seg-model", models["seg"], "--out", out / "hard.csv"]
    before = tree_digest(root, tmp_path / "models")
    result = run_ct(*args, "--device", device)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == _expected(device)
    assert [line for line in result.stderr.splitlines() if line.startswith(("error", "internal"))] == [
        _expected(device)
    ]
    assert tree_digest(root, tmp_path / "models") == before
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} if out.exists() else set()
    assert written == set()  # refused before --out is created, locked or logged to


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_gpu_where_torch_sees_none_is_one_line_exit_2(setup, device):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tmp_path, models, root, uids = setup
    result = run_ct(
        "diagnose",
        uids[0],
        "--data-root",
        root,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--device",
        device,
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == _expected(device)
