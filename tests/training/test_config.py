"""TrainConfig: per-task defaults, validation with one-line messages, and the device/precision choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ct_pipeline.datasets import AugmentationConfig
from ct_pipeline.errors import BadInputError
from ct_pipeline.training import TrainConfig
from ct_pipeline.devices import resolve_device, resolve_precision
from ct_pipeline.training.distributed import setup_distributed
from ct_pipeline.training.tasks import ClassifierTask, SegmentationTask, make_task

ROOTS = (Path("/data"),)


def test_task_defaults_are_the_books():
    cls = TrainConfig.for_task("cls", data_roots=ROOTS, out_dir=Path("runs/a"))
    assert (cls.optimizer, cls.lr, cls.momentum, cls.batch_size, cls.balance_ratio) == ("sgd", 1e-3, 0.99, 32, 1.0)
    assert cls.augmentation == AugmentationConfig() and cls.run_name == "a" and cls.kind == "cls"
    mal = TrainConfig.for_task("mal", data_roots=ROOTS, out_dir=Path("runs/b"), lr=0.01)
    assert (mal.lr, mal.optimizer) == (0.01, "sgd")
    seg = TrainConfig.for_task("seg", data_roots=ROOTS, out_dir=Path("runs/c"))
    assert (seg.optimizer, seg.batch_size, seg.fn_loss_weight) == ("adam", 16, 8.0)
    assert seg.augmentation == AugmentationConfig.book_segmentation()
    assert isinstance(make_task(seg), SegmentationTask) and isinstance(make_task(mal), ClassifierTask)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "det"}, r"^task 'det' is not one of cls, mal, seg$"),
        ({"optimizer": "rmsprop"}, r"^--optimizer 'rmsprop' is not one of sgd, adam$"),
        ({"batch_size": 0}, r"^--batch-size 0: expected a whole number >= 1$"),
        ({"epoch_size": 2.5}, r"^--epoch-size 2\.5: expected a whole number >= 1$"),
        ({"num_workers": -1}, r"^--num-workers -1: expected 0"),
        ({"val_stride": 1}, r"^--val-stride 1: expected 2 or more"),
        ({"momentum": 1.5}, r"^--momentum 1\.5: expected a number from 0\.0 up to 1\.0$"),
        ({"lr": float("nan")}, r"^--lr nan: expected a number above 0\.0 up to 10\.0$"),
        ({"finetune_depth": 7}, r"^--finetune-depth 7: expected 1 \(head only\) to 6"),
        ({"data_roots": ()}, r"^no data roots: pass --data-root DIR or set CT_DATA_ROOT$"),
        ({"device": "tpu"}, r"^--device 'tpu' is not one of auto, cpu, cuda$"),
    ],
)
def test_bad_values_are_refused_with_one_line(changes, message):
    options = {"data_roots": ROOTS, "out_dir": Path("runs/x"), **changes}
    with pytest.raises(BadInputError, match=message):
        TrainConfig(**{"task": "cls", **options})


def test_device_and_precision_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match=r"^--device cuda: torch sees no GPU here; this machine has cpu: use one of them or auto$"):
            resolve_device("cuda")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    with pytest.raises(BadInputError, match=r"--precision fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_single_process_without_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
