"""The names of the numeric precisions, once for training, diagnosis, inference and the CLI.

Torch-free on purpose: the CLI lists them in its help before torch loads. What "auto" becomes on
a device is :func:`ct_pipeline.devices.resolve_precision`'s choice (training and diagnosis differ).
"""

from __future__ import annotations

# What a network runs in: float32, or autocast to bfloat16 / float16 (GPUs only).
RESOLVED_PRECISIONS = ("fp32", "bf16", "fp16")
# What a user may ask for (--precision): one of those, or "auto" to let the device decide.
PRECISIONS = ("auto", *RESOLVED_PRECISIONS)
