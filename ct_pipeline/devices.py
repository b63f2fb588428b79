"""Device policy, once for training and inference: which device, which precision, autocast.

(The CPU thread budget is :mod:`ct_pipeline.threads`.)
"""

from __future__ import annotations

import os
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
    slower, see :func:`cpu_has_fast_bf16`). Inference runs all three networks in bf16 on a CPU
    whose oneDNN may use bf16 dot products (:func:`cpu_runs_bf16_inference`): on the 2-core
    AVX512-BF16 EPYC the U-Net ran 1.6x and the classifier 1.4x faster than fp32 channels-last,
    and on the real test CT the findings >= 0.9 stayed those of fp32 (the U-Net's border pixels
    move, so candidate centres can shift by a voxel; tests/diagnosis/test_real_ct.py). Elsewhere
    on the CPU fp32. On GPUs the classifiers run in bf16 and the U-Net in fp32 (not measured
    on a GPU yet).

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
    if device.type == "cpu":
        return "bf16" if cpu_runs_bf16_inference() else "fp32"
    return "bf16" if purpose != "seg" and gpu_bf16 else "fp32"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return set(next((line for line in handle if line.startswith("flags")), "").split())
    except OSError:
        return set()


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU has AMX tiles for bf16, where bf16 training is known to beat fp32.

    Without AMX it does not: on a 2-core AVX-512-bf16 Xeon (torch 2.13), one training step of
    batch 32 (classifier, channels-last) ran at 54 samples/s in fp32 and 36 in bf16 autocast, the
    U-Net (batch 16 of 7x64x64) at 179 and 154: oneDNN's bf16 convolution backward is the slow part.
    """
    return "amx_bf16" in _cpu_flags()


# oneDNN's names for the instruction sets that have bf16 dot products (ONEDNN_MAX_CPU_ISA).
_BF16_ISA_MARKS = ("BF16", "AMX", "AVX10")


def cpu_runs_bf16_inference() -> bool:
    """Whether bf16 inference runs on the CPU's own bf16 instructions (AVX512-BF16 or AMX).

    False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below them (the numeric tests run that way):
    there bf16 would be emulated, slower than fp32, and "auto" must keep the fp32 results.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()
    if cap not in ("", "ALL", "DEFAULT") and not any(mark in cap for mark in _BF16_ISA_MARKS):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPE[precision])
