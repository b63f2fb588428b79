"""The book's 2D segmentation U-Net (chapter 13), state-dict compatible with its published weights.

The book wraps jvanvugt's ``pytorch-unet`` (MIT licence, https://github.com/jvanvugt/pytorch-unet)
in ``UNetWrapper``: an input BatchNorm over the stacked CT slices, the U-Net, then a sigmoid.
Module names here are the book's, so its ``model_state`` loads with no renaming:
``input_batchnorm.*``, ``unet.down_path.<i>.block.<j>.*``, ``unet.up_path.<i>.up.*``,
``unet.up_path.<i>.conv_block.block.<j>.*``, ``unet.last.*``.

The book's copy of the U-Net pools with ``avg_pool2d`` where jvanvugt's uses max pooling, and
its activations are ReLU (the book's repository later switched to LeakyReLU, which does not
reproduce the published outputs). Both choices were checked against the book's reference outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ct_pipeline.models.weights_init import init_weights_like_book

UNET_ARCH = "unet-wrapper"


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the segmentation network; the defaults are the book's published model.

    Attributes:
        in_channels: stacked CT slices per input (the book: the slice plus 3 above and 3 below).
        n_classes: output channels (1: nodule probability per pixel).
        depth: number of resolution levels.
        wf: the first level has ``2**wf`` channels, doubling per level (4 -> 16/32/64).
        padding: pad the 3x3 convolutions so the output has the input's height and width.
        batch_norm: BatchNorm after every activation inside the U-Net.
        up_mode: "upconv" (2x2 transposed convolution) or "upsample" (bilinear + 1x1 conv).
    """

    in_channels: int = 7
    n_classes: int = 1
    depth: int = 3
    wf: int = 4
    padding: bool = True
    batch_norm: bool = True
    up_mode: str = "upconv"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.n_classes < 1 or self.depth < 1 or self.wf < 0:
            raise ValueError(f"UNetConfig needs positive sizes, got {self}")
        if self.up_mode not in ("upconv", "upsample"):
            raise ValueError(f"up_mode must be 'upconv' or 'upsample', got {self.up_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return cls(**data)


class UNetConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by ReLU and (optionally) BatchNorm.

    (N, in_size, H, W) -> (N, out_size, H, W) with padding, (H-4, W-4) without.
    """

    def __init__(self, in_size: int, out_size: int, padding: bool, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer_in in (in_size, out_size):
            layers.append(nn.Conv2d(layer_in, out_size, kernel_size=3, padding=int(padding)))
            layers.append(nn.ReLU())
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_size))
        # Named `block` with these indices (conv 0, act 1, bn 2, conv 3, ...) as in the book's weights.
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetUpBlock(nn.Module):
    """Upsample by 2, concatenate the (centre-cropped) skip connection, then a conv block.

    x: (N, in_size, H, W), bridge: (N, out_size, >=2H, >=2W) -> (N, out_size, 2H, 2W) with padding.
    """

    def __init__(self, in_size: int, out_size: int, up_mode: str, padding: bool, batch_norm: bool) -> None:
        super().__init__()
        if up_mode == "upconv":
            self.up: nn.Module = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(mode="bilinear", scale_factor=2),
                nn.Conv2d(in_size, out_size, kernel_size=1),
            )
        self.conv_block = UNetConvBlock(in_size, out_size, padding, batch_norm)

    @staticmethod
    def _center_crop(layer: torch.Tensor, target_hw: torch.Size) -> torch.Tensor:
        # Only needed without padding, where the skip connection is larger than the upsampled map.
        height, width = layer.shape[-2:]
        top = (height - target_hw[0]) // 2
        left = (width - target_hw[1]) // 2
        return layer[:, :, top : top + target_hw[0], left : left + target_hw[1]]

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        bridge = self._center_crop(bridge, up.shape[-2:])
        return self.conv_block(torch.cat([up, bridge], dim=1))


class UNet(nn.Module):
    """jvanvugt's U-Net as the book uses it. (N, in_channels, H, W) -> logits (N, n_classes, H, W).

    With padding, H and W must be divisible by ``2**(depth-1)``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.down_path = nn.ModuleList()
        prev_channels = config.in_channels
        for level in range(config.depth):
            channels = 2 ** (config.wf + level)
            self.down_path.append(UNetConvBlock(prev_channels, channels, config.padding, config.batch_norm))
            prev_channels = channels
        self.up_path = nn.ModuleList()
        for level in reversed(range(config.depth - 1)):
            channels = 2 ** (config.wf + level)
            self.up_path.append(UNetUpBlock(prev_channels, channels, config.up_mode, config.padding, config.batch_norm))
            prev_channels = channels
        self.last = nn.Conv2d(prev_channels, config.n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bridges: list[torch.Tensor] = []
        for level, down in enumerate(self.down_path):
            x = down(x)
            if level != len(self.down_path) - 1:
                bridges.append(x)
                x = F.avg_pool2d(x, 2)
        for up, bridge in zip(self.up_path, reversed(bridges)):
            x = up(x, bridge)
        return self.last(x)


class SegmentationUNet(nn.Module):
    """The book's ``UNetWrapper``: input BatchNorm, U-Net, sigmoid.

    Input: (N, in_channels, H, W) float32 HU (clipped to -1000..1000, not normalised: the input
    BatchNorm does that). Output: (N, n_classes, H, W) nodule probability in [0, 1].
    """

    arch = UNET_ARCH

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        self.input_batchnorm = nn.BatchNorm2d(self.config.in_channels)
        self.unet = UNet(self.config)
        self.final = nn.Sigmoid()
        init_weights_like_book(self)
        # Except the 1x1 output convolution: the book's fan-out rule gives its 16 weights std 1.4,
        # so the fresh model starts with a third of the pixels' sigmoids saturated (logit std ~5.5),
        # where the Dice loss has no gradient; it then settles on "everything is nodule" and stays
        # there for many epochs. torch's fan-in initialisation starts the logits near 0 (std ~0.6).
        self.unet.last.reset_parameters()

    def forward(self, input_batch: torch.Tensor) -> torch.Tensor:
        return self.final(self.unet(self.input_batchnorm(input_batch)))
