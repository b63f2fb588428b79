"""Run a network for inference as fast as the device allows: eval mode, memory format, autocast.

CPU time of one batch (1 thread, median of 5; AVX-512-bf16 Xeon, torch 2.13 CPU build) for
8 U-Net slices (8, 7, 512, 512) and 64 classifier crops (64, 1, 32, 48, 48):

    U-Net:      fp32 4.2 s   channels-last 2.5 s   bf16 3.2 s   bf16 + channels-last 2.3 s
    classifier: fp32 1.3 s   channels-last 0.8 s   bf16 1.6 s   bf16 + channels-last 1.1 s

hence channels-last by default. On the AVX512-BF16 AMD EPYC of the benchmarks bf16 gains far
more: the folded U-Net on 2 slices took 0.41-0.47 s in fp32 channels-last and 0.22-0.30 s in bf16
(1 thread, alternating; torch.compile was 2.5x slower, onnxruntime 1.2x faster), and the classifier
stage of the real CT 1.8 s against 2.5 s. Which precision "auto" picks is
:func:`ct_pipeline.devices.resolve_precision`'s; bf16 moves a few mask-border pixels
(tests/models/test_networks.py states the tolerances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ct_pipeline.devices import autocast
from ct_pipeline.precision import RESOLVED_PRECISIONS


@dataclass(frozen=True, eq=False)
class InferenceModel:
    """A network ready for inference; call it on a float32 batch to get float32 outputs.

    Attributes:
        model: the network, in eval mode, on ``device``, in the chosen memory format.
        device: where it runs.
        precision: "fp32", or "bf16"/"fp16" autocast (weights stay float32).
        channels_last: whether inputs are converted to channels-last (2D or 3D as the input needs).
    """

    model: nn.Module
    device: torch.device
    precision: str
    channels_last: bool

    def prepare_input(self, batch: torch.Tensor) -> torch.Tensor:
        """Move ``batch`` (N, C, H, W) or (N, C, I, R, C) to the device in the model's memory format."""
        batch = batch.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=_channels_last_format(batch.dim()))
        return batch

    def __call__(self, batch: torch.Tensor) -> Any:
        """Outputs of ``model(batch)`` as float32 (a tensor, or a tuple of them for the classifier)."""
        with torch.inference_mode(), autocast(self.precision, self.device):
            outputs = self.model(self.prepare_input(batch))
        if isinstance(outputs, tuple):
            return tuple(output.float() for output in outputs)
        return outputs.float()


def prepare_for_inference(
    model: nn.Module,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = True,
) -> InferenceModel:
    """Put ``model`` in eval mode on ``device`` and choose its memory format and autocast.

    Args:
        model: a SegmentationUNet (2D convolutions) or LunaClassifier (3D convolutions).
        device: "cpu", "cuda", "cuda:1", ...
        precision: "fp32"; "bf16" (CPU with AVX-512 bf16/AMX, or recent GPUs); "fp16" (GPU only).
        channels_last: use the channels-last memory format (2D or 3D as the model needs); faster on CPU.

    Raises:
        ValueError: unknown precision, or fp16 on the CPU.
    """
    device = torch.device(device)
    if precision not in RESOLVED_PRECISIONS:
        raise ValueError(f"precision must be one of {RESOLVED_PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for GPUs; use precision 'bf16' or 'fp32' on the CPU")
    is_3d = any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in model.modules())
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=_channels_last_format(5 if is_3d else 4))
    return InferenceModel(model=model, device=device, precision=precision, channels_last=channels_last)


def _channels_last_format(ndim: int) -> torch.memory_format:
    return torch.channels_last_3d if ndim == 5 else torch.channels_last
