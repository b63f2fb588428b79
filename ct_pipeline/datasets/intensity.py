"""Per-sample intensity changes that tell scanners apart: HU calibration, reconstruction kernel, noise level.

Sites differ in how their scanner maps attenuation to HU (a linear map), how much noise their dose
and kernel leave, and their kernel (soft: blurred; sharp: edges enhanced). :func:`augment_batch`
draws one of each per sample with :func:`sample_intensity` and applies them with
:func:`apply_intensity`, in the order a scanner does: calibration, kernel, then noise (added by
:func:`~ct_pipeline.datasets.augmentation.augment_batch`).

The kernel works in the row-col plane only: for 3D crops (N, C, D, H, W) every slice alone, for
2D segmentation inputs (N, C, H, W) every channel alone, because those channels are neighbouring
slices and a blur across them would mix slices a scanner never mixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ct_pipeline.datasets.augmentation_config import HU_WINDOW, AugmentationConfig

# The unsharp mask's blur (voxels), as an edge-enhancing kernel's: sharpening boosts what a
# one-voxel blur removes.
UNSHARP_SIGMA_VOX = 1.0


@dataclass(frozen=True)
class IntensityChanges:
    """One draw per sample (N,), float32 tensors on the generator's device.

    Attributes:
        hu_scale: multiplies HU (1 + a).
        hu_offset_hu: added after the scale.
        blur_sigma_vox: in-plane Gaussian SD; 0 = no blur.
        sharpen_amount: unsharp-mask amount; 0 = no sharpening.
        noise_sd_hu: the SD of the sample's Gaussian noise.
    """

    hu_scale: torch.Tensor
    hu_offset_hu: torch.Tensor
    blur_sigma_vox: torch.Tensor
    sharpen_amount: torch.Tensor
    noise_sd_hu: torch.Tensor


def sample_intensity(n: int, config: AugmentationConfig, generator: torch.Generator) -> IntensityChanges:
    """Draw ``n`` samples' intensity changes. All six uniforms are drawn whatever is switched on, so
    turning one part off does not change what the others draw for the same seed."""
    u = torch.rand(n, 6, generator=generator, device=generator.device, dtype=torch.float64)
    signed = 2.0 * u - 1.0
    scale = 1.0 + config.hu_scale_fraction * signed[:, 0]
    offset = config.hu_offset_hu * signed[:, 1]
    noise_top = max(config.noise_max_hu, config.noise_hu)
    noise_sd = config.noise_hu + (noise_top - config.noise_hu) * u[:, 2]
    changed = u[:, 3] < config.kernel_probability
    blur_on, sharpen_on = config.blur_sigma_max_vox > 0, config.sharpen_amount_max > 0
    # Both on: equal odds; one on: every changed sample gets that one.
    blurs = changed & (u[:, 4] < 0.5 if blur_on and sharpen_on else torch.full_like(changed, blur_on))
    sharpens = changed & ~blurs & sharpen_on
    sigma = torch.where(blurs, config.blur_sigma_max_vox * u[:, 5], 0.0)
    amount = torch.where(sharpens, config.sharpen_amount_max * u[:, 5], 0.0)
    return IntensityChanges(scale.float(), offset.float(), sigma.float(), amount.float(), noise_sd.float())


def apply_intensity(images: torch.Tensor, changes: IntensityChanges, config: AugmentationConfig) -> torch.Tensor:
    """Calibration then kernel of ``images`` (N, C, H, W) or (N, C, D, H, W), HU; same shape and dtype."""
    n, nd = images.shape[0], images.dim() - 2
    per_sample = (n,) + (1,) * (nd + 1)
    work = images.float()
    if config.calibration:
        scale = changes.hu_scale.to(images.device).view(per_sample)
        offset = changes.hu_offset_hu.to(images.device).view(per_sample)
        work = (work * scale + offset).clamp(*HU_WINDOW)
    sigma = changes.blur_sigma_vox.to(images.device)
    if bool((sigma > 0).any()):
        work = blur_in_plane(work, sigma)
    amount = changes.sharpen_amount.to(images.device)
    if bool((amount > 0).any()):
        smooth = blur_in_plane(work, torch.where(amount > 0, UNSHARP_SIGMA_VOX, 0.0))
        work = work + amount.view(per_sample) * (work - smooth)
    return work.to(images.dtype)


def blur_in_plane(images: torch.Tensor, sigma_vox: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each sample's row-col planes with its own SD (N,) in voxels (0: unchanged).

    Separable: one pass along col, one along row, edges replicated (a crop's edge continues).
    """
    shape = images.shape
    rows, cols = shape[-2], shape[-1]
    planes_per_sample = math.prod(shape[1:-2])
    radius = max(1, math.ceil(3.0 * float(sigma_vox.max())))
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    safe = sigma_vox.float().clamp(min=1e-6)[:, None]
    kernel = torch.exp(-0.5 * (taps[None, :] / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # sigma 0: a delta (all but the centre underflow)
    kernel = kernel.repeat_interleave(planes_per_sample, dim=0)  # (planes, taps), one row per plane
    planes = images.reshape(1, -1, rows, cols)
    n_planes = planes.shape[1]
    padded = F.pad(planes, (radius, radius, 0, 0), mode="replicate")
    along_cols = F.conv2d(padded, kernel.view(n_planes, 1, 1, -1), groups=n_planes)
    padded = F.pad(along_cols, (0, 0, radius, radius), mode="replicate")
    along_rows = F.conv2d(padded, kernel.view(n_planes, 1, -1, 1), groups=n_planes)
    return along_rows.reshape(shape)
