"""Batched random augmentation on the training device: mirror, shift, scale, rotation, intensity, noise.

The datasets return un-augmented crops; the training loop calls :func:`augment_batch` on each
batch where it already lives (GPU or CPU). One random affine per sample moves the content,

    q_out = R(angle) @ S(scale) @ F(mirror) @ q_in + shift_vox

with ``q`` a voxel position relative to the crop's centre in (index, row, col) order, ``R`` a
rotation in the row-col plane (about the slice axis), and the image resampled with
``grid_sample`` (bilinear, edges replicated like the book) and any label with nearest-neighbour
sampling (outside = background). Then, per sample, the intensity changes of another scanner
(:mod:`ct_pipeline.datasets.intensity`: HU calibration, kernel), and Gaussian noise last.

Why the affine is built here in voxels and only then converted to grid units: ``grid_sample``'s
[-1, 1] units differ per axis when the sides differ (7x512x512, 32x48x48), so a rotation written
in grid units would shear. And the book's 2D shift silently did nothing (its translation was
written into the matrix row that was then sliced away); tests check every part moves a known
voxel where it should.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.datasets.intensity import apply_intensity, sample_intensity
from ct_pipeline.errors import BadInputError

__all__ = ["AugmentationConfig", "SampleTransforms", "apply_transforms", "augment_batch", "sample_transforms"]


@dataclass(frozen=True)
class SampleTransforms:
    """One affine per sample, in voxel units and (index, row, col) axis order (nd = 2 or 3).

    Attributes:
        flip: (N, nd) bool, mirror the axis about the crop's centre.
        scale: (N, nd) content magnification per axis.
        angle_rad: (N,) rotation in the row-col plane; positive turns +row towards +col.
        shift_vox: (N, nd) content displacement in voxels.
    """

    flip: torch.Tensor
    scale: torch.Tensor
    angle_rad: torch.Tensor
    shift_vox: torch.Tensor

    @classmethod
    def identity(cls, n: int, nd: int, device: torch.device | str = "cpu") -> SampleTransforms:
        return cls(
            torch.zeros(n, nd, dtype=torch.bool, device=device),
            torch.ones(n, nd, device=device),
            torch.zeros(n, device=device),
            torch.zeros(n, nd, device=device),
        )


def sample_transforms(
    n: int, spatial_shape: tuple[int, ...], config: AugmentationConfig, generator: torch.Generator
) -> SampleTransforms:
    """Draw ``n`` random affines for crops of ``spatial_shape`` (index, row, col) or (row, col).

    Every affine parameter is drawn whatever the switches say, so turning one part off does not
    change what the others draw for the same seed.
    """
    nd = len(spatial_shape)
    device = generator.device
    u = torch.rand(n, 3 * nd + 1, generator=generator, device=device, dtype=torch.float64)
    signed = 2.0 * u - 1.0
    flip = (u[:, :nd] < 0.5) if config.mirror else torch.zeros(n, nd, dtype=torch.bool, device=device)
    scale = 1.0 + config.scale_fraction * signed[:, nd : 2 * nd]
    half_side = torch.tensor(spatial_shape, dtype=torch.float64, device=device) / 2.0
    shift_vox = config.shift_fraction * half_side * signed[:, 2 * nd : 3 * nd]
    angle_rad = math.radians(config.rotation_deg) * signed[:, 3 * nd]
    return SampleTransforms(flip, scale.float(), angle_rad.float(), shift_vox.float())


def _grid_theta(transforms: SampleTransforms, spatial_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``affine_grid``'s theta (N, nd, nd+1): output grid position -> input grid position (x, y[, z] order)."""
    nd = len(spatial_shape)
    flip = transforms.flip.to(device)
    scale = transforms.scale.to(device, torch.float64)
    angle = transforms.angle_rad.to(device, torch.float64)
    shift = transforms.shift_vox.to(device, torch.float64)
    n = flip.shape[0]
    # inverse of q_out = R S F q_in + s, in voxels: q_in = F^-1 S^-1 R(-angle) (q_out - s)
    f_s_inv = torch.where(flip, -1.0, 1.0).to(torch.float64) / scale  # (N, nd), diagonal
    rot_inv = torch.eye(nd, dtype=torch.float64, device=device).repeat(n, 1, 1)
    r, c = nd - 2, nd - 1  # the row and col axes
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot_inv[:, r, r], rot_inv[:, r, c] = cos, sin
    rot_inv[:, c, r], rot_inv[:, c, c] = -sin, cos
    m_inv = f_s_inv[:, :, None] * rot_inv  # (N, nd, nd), voxels
    # grid units with align_corners=False: g = q * 2 / side, so theta = D M^-1 D^-1, t = -D M^-1 s
    to_grid = 2.0 / torch.tensor(spatial_shape, dtype=torch.float64, device=device)
    linear = to_grid[None, :, None] * m_inv / to_grid[None, None, :]
    offset = -to_grid[None, :] * torch.einsum("nij,nj->ni", m_inv, shift)
    theta = torch.cat([linear, offset[:, :, None]], dim=2)
    # grid_sample speaks (x, y, z) = (col, row, index): reverse the axis order
    order = list(range(nd - 1, -1, -1))
    theta = theta[:, order][:, :, order + [nd]]
    return theta.float()


def apply_transforms(
    images: torch.Tensor, transforms: SampleTransforms, labels: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Resample ``images`` (N, C, *spatial) and optional ``labels`` (N, 1, *spatial) by ``transforms``."""
    spatial = tuple(images.shape[2:])
    theta = _grid_theta(transforms, spatial, images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    out = F.grid_sample(work, grid.to(work.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    out = out.to(images.dtype)
    if labels is None:
        return out
    moved = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, moved.to(labels.dtype)


def augment_batch(
    images: torch.Tensor,
    config: AugmentationConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a batch where it lives.

    Args:
        images: (N, C, D, H, W) classification crops or (N, C, H, W) segmentation slices, HU.
        config: what to do; when nothing is enabled the inputs are returned as they are.
        generator: the only source of randomness; seed it from (seed, epoch, rank) for
            reproducible runs. Best on the images' device (a CPU generator with GPU images works
            but moves the noise across).
        labels: (N, 1, *spatial) masks that move with the image (nearest-neighbour), never noised.

    Returns:
        The augmented images (same shape and dtype), or (images, labels) when labels are given.
    """
    if images.dim() not in (4, 5):
        raise BadInputError(
            f"augment_batch got images of shape {tuple(images.shape)}; expected (N, C, H, W) or (N, C, D, H, W)"
        )
    if labels is not None and (labels.shape[0] != images.shape[0] or labels.shape[2:] != images.shape[2:]):
        raise BadInputError(f"labels of shape {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    if not config.enabled():
        return images if labels is None else (images, labels)
    n, spatial = images.shape[0], tuple(images.shape[2:])
    transforms = sample_transforms(n, spatial, config, generator)
    out, moved = images, labels
    if config.geometric:
        result = apply_transforms(images, transforms, labels)
        out, moved = result if labels is not None else (result, None)
    noise = None
    if config.noisy:
        noise = torch.randn(images.shape, generator=generator, device=generator.device, dtype=torch.float32)
    if config.intensity:
        # drawn after everything above, so that with these off a seed draws what it did before they existed
        changes = sample_intensity(n, config, generator)
        out = apply_intensity(out, changes, config)
        if noise is not None:
            sd = changes.noise_sd_hu.to(out.device).view((n,) + (1,) * (images.dim() - 1))
            out = out + (noise.to(out.device) * sd).to(out.dtype)
    elif noise is not None:
        out = out + (noise.to(out.device) * config.noise_hu).to(out.dtype)
    return out if labels is None else (out, moved)
