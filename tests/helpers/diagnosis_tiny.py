"""Tiny, predictable inputs for the diagnosis tests: a phantom chest CT and hand-set networks.

* :func:`phantom_chest` -- a small CT: fat-filled body, two air-filled lungs, air outside, and
  bright spherical "nodules" in the lungs at known voxels.
* :func:`threshold_unet` -- the book's U-Net architecture (tiny widths) with weights set by hand
  so that it outputs ``sigmoid(gain * (hu - level_hu) / scale)`` of the centre slice: a pixel is
  "nodule" where the HU is above ``level_hu``. Real architecture, real checkpoint, known output.
* :func:`constant_classifier` -- a tiny classifier whose probability is the same for every crop.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ct_pipeline.geometry import Geometry
from ct_pipeline.models import save_checkpoint
from ct_pipeline.models.classifier import ClassifierConfig, LunaClassifier
from ct_pipeline.models.unet import SegmentationUNet, UNetConfig

SHAPE_IRC = (24, 64, 64)
SPACING_XYZ = (0.8, 0.8, 2.0)
NODULES_IRC = ((8, 24, 18), (15, 40, 46))  # centres of the bright spheres, in the lungs
NODULE_RADIUS_MM = 3.2


def phantom_geometry() -> Geometry:
    return Geometry((-25.0, -30.0, -100.0), SPACING_XYZ, (1, 0, 0, 0, 1, 0, 0, 0, 1))


def phantom_chest(shape_irc: tuple[int, int, int] = SHAPE_IRC, nodules_irc=NODULES_IRC) -> np.ndarray:
    """int16 HU (index, row, col): body -100 HU, lungs -850 HU, outside -1000 HU, nodules +60 HU."""
    n_index, n_rows, n_cols = shape_irc
    i, r, c = np.indices(shape_irc, dtype=np.float64)
    hu = np.full(shape_irc, -1000, dtype=np.int16)
    body = ((r - n_rows / 2) / (0.45 * n_rows)) ** 2 + ((c - n_cols / 2) / (0.47 * n_cols)) ** 2 <= 1
    hu[body] = -100
    for center_c in (0.3 * n_cols, 0.7 * n_cols):
        lung = (
            ((r - n_rows / 2) / (0.3 * n_rows)) ** 2
            + ((c - center_c) / (0.15 * n_cols)) ** 2
            + ((i - n_index / 2) / (0.42 * n_index)) ** 2
        ) <= 1
        hu[lung] = -850
    spacing_irc = np.asarray(SPACING_XYZ[::-1])
    for center in nodules_irc:
        distance = np.sqrt(sum(((g - x) * s) ** 2 for g, x, s in zip((i, r, c), center, spacing_irc)))
        hu[distance <= NODULE_RADIUS_MM] = 60
    return hu


def threshold_unet(level_hu: float = 0.0, scale_hu: float = 100.0, gain: float = 20.0, wf: int = 1) -> SegmentationUNet:
    """The book's U-Net (depth 3, 2**wf channels) computing ``sigmoid(gain * ((hu - level) / scale))``.

    Only channel 0 carries signal: the input BatchNorm maps the centre slice to
    ``(hu - level) / scale + 1``, identity convolutions pass it through the ReLUs (it is
    positive where it matters), the deeper levels are switched off, and the last 1x1
    convolution subtracts the 1 back and applies the gain.
    """
    model = SegmentationUNet(UNetConfig(in_channels=7, depth=3, wf=wf))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
                module.weight.fill_(1.0)
                module.bias.zero_()
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.zero_()
                module.bias.zero_()
        bn = model.input_batchnorm
        bn.running_mean.fill_(level_hu - scale_hu)
        bn.running_var.fill_(scale_hu**2 - bn.eps)
        centre = model.config.in_channels // 2
        down0 = model.unet.down_path[0].block
        down0[0].weight[0, centre, 1, 1] = 1.0
        down0[3].weight[0, 0, 1, 1] = 1.0
        up = model.unet.up_path[-1]
        up_channels = up.up.out_channels
        up.conv_block.block[0].weight[0, up_channels + 0, 1, 1] = 1.0
        up.conv_block.block[3].weight[0, 0, 1, 1] = 1.0
        model.unet.last.weight[0, 0, 0, 0] = gain
        model.unet.last.bias[0] = -gain
    return model.eval()


def constant_classifier(probability: float, crop_shape_irc=(16, 16, 16)) -> LunaClassifier:
    """A tiny classifier whose positive-class probability is ``probability`` for any crop."""
    model = LunaClassifier(ClassifierConfig(conv_channels=2, crop_shape_irc=crop_shape_irc))
    with torch.no_grad():
        model.head_linear.weight.zero_()
        logit = math.log(probability / (1.0 - probability))
        model.head_linear.bias.copy_(torch.tensor([0.0, logit]))
    return model.eval()


def random_classifier(seed: int = 0, crop_shape_irc=(16, 16, 16)) -> LunaClassifier:
    torch.manual_seed(seed)
    return LunaClassifier(ClassifierConfig(conv_channels=2, crop_shape_irc=crop_shape_irc)).eval()


def write_models(folder: Path, nodule_prob: float = 0.9, malignancy_prob: float | None = None) -> dict[str, Path]:
    """Checkpoints of a threshold U-Net and constant classifiers in ``folder``: {"seg", "cls"[, "mal"]}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"seg": folder / "seg.ckpt", "cls": folder / "cls.ckpt"}
    save_checkpoint(paths["seg"], threshold_unet(), kind="seg")
    save_checkpoint(paths["cls"], constant_classifier(nodule_prob), kind="cls")
    if malignancy_prob is not None:
        paths["mal"] = folder / "mal.ckpt"
        save_checkpoint(paths["mal"], constant_classifier(malignancy_prob), kind="mal")
    return paths


def write_phantom_luna(root: Path, n_series: int, first: int = 60) -> list[str]:
    """``n_series`` phantom chests as ``root/subset0/<uid>.mhd`` (no CSVs: for diagnose); returns the UIDs."""
    from ct_pipeline.loading.mhd import write_mhd

    (root / "subset0").mkdir(parents=True, exist_ok=True)
    uids = [f"1.2.826.0.1.3680043.8.498.{first + k}" for k in range(n_series)]
    for uid in uids:
        write_mhd(phantom_chest(), phantom_geometry(), root / "subset0" / f"{uid}.mhd")
    return uids
