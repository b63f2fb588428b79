"""Device policy, once for training and inference: which device, which precision, autocast.

(The CPU thread budget is :mod:`ct_pipeline.threads`.)
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch

from ct_pipeline.errors import BadInputError

Purpose = Literal["train", "seg", "cls", "mal"]
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> this rank's GPU when there is one, else the CPU; "cuda" -> this rank's GPU;
    "cuda:N", "mps" and "cpu" as given, once this build and machine are known to have them.

    Raises:
        BadInputError: not a device, or one this torch build or machine does not have (the
            message lists those it has).
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise BadInputError(f"--device {requested!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from err
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpus == 0:
            raise _missing(requested, "torch sees no GPU here")
        if device.index is None:
            return torch.device("cuda", local_rank % n_gpus)
        if device.index >= n_gpus:
            raise _missing(requested, f"torch sees {n_gpus} GPU{'s' if n_gpus > 1 else ''} here")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            built = torch.backends.mps.is_built()
            raise _missing(
                requested, "this machine has no Apple GPU" if built else "this torch build has no MPS support"
            )
    elif device.type != "cpu":
        # torch knows more device types (meta, xpu, ...) than the pipeline runs on.
        raise _missing(requested, "the pipeline runs on cpu, cuda and mps only")
    return device


def available_devices() -> list[str]:
    """The devices this torch build and machine can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _missing(requested: str, why: str) -> BadInputError:
    return BadInputError(
        f"--device {requested}: {why}; this machine has {', '.join(available_devices())}: use one of them or auto"
    )


def resolve_precision(requested: str, device: torch.device, purpose: Purpose = "train") -> str:
    """The precision to train (``purpose`` "train") or to run one network ("seg", "cls", "mal") in.

    "auto": training uses bf16 on GPUs that have it and on CPUs with AMX (elsewhere bf16 trains
    slower, see :func:`cpu_has_fast_bf16`). Inference keeps the U-Net in fp32 (in bf16 0.9 % of
    the real test CT's mask pixels flipped and a candidate of probability 0.71 disappeared) and
    runs the classifiers in bf16 on GPUs only (on the CPU bf16 ran slower than fp32 channels-last).

    Raises:
        BadInputError: fp16 without a GPU, bf16 on a GPU without it.
    """
    if requested == "fp16" and device.type != "cuda":
        raise BadInputError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInputError("--precision bf16: this GPU has no bf16; use fp16 or fp32")
    if requested != "auto":
        return requested
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if purpose == "train":
        return "bf16" if gpu_bf16 or (device.type == "cpu" and cpu_has_fast_bf16()) else "fp32"
    return "bf16" if purpose != "seg" and gpu_bf16 else "fp32"


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU has AMX tiles for bf16, where bf16 training is known to beat fp32.

    Without AMX it does not: on a 2-core AVX-512-bf16 Xeon (torch 2.13), one training step of
    batch 32 (classifier, channels-last) ran at 54 samples/s in fp32 and 36 in bf16 autocast, the
    U-Net (batch 16 of 7x64x64) at 179 and 154: oneDNN's bf16 convolution backward is the slow part.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPE[precision])
