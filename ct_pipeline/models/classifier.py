"""The book's 3D nodule classifier (chapters 11-14), state-dict compatible with its published weights.

Parameter names are the book's ``LunaModel``: ``tail_batchnorm.*``, ``block<k>.conv1.*``,
``block<k>.conv2.*`` (k = 1..4), ``head_linear.*``. The same network serves the nodule/non-nodule
classifier (kind "cls") and the benign/malignant one (kind "mal").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ct_pipeline.crops import check_crop_spacing
from ct_pipeline.models.weights_init import init_weights_like_book

CLASSIFIER_ARCH = "luna-classifier"
_N_BLOCKS = 4  # each block halves every axis, so crops must divide by 2**4


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the classifier; the defaults are the book's published model.

    Attributes:
        in_channels: input channels (1: HU).
        conv_channels: channels of the first block, doubling per block (8 -> 8/16/32/64).
        crop_shape_irc: input crop size (index, row, col) in voxels; each must divide by 16.
        n_classes: output classes (2: [not nodule, nodule] or [benign, malignant]).
        block_batchnorm: a BatchNorm after every convolution (``block<k>.bn1/bn2``). Off in the
            book's model (whose weights then load unchanged); on, the network trains in far fewer
            steps, which is what a few minutes on a CPU allows (see README, "What to expect").
        centre_head: the head also sees the central 2x2x2 cells of block2's and block3's
            outputs (``head_linear`` then has :attr:`head_features` + 384 inputs). Four max-pools
            leave the book's head 2x3x3 cells of 16 voxels each, so it cannot tell a blob at the
            candidate from one beside it; the centre cells can, and the network learns from far
            fewer samples. Not the book's shape.
        crop_spacing_mm: the voxel spacing (index, row, col) in mm of the crops the network was
            trained on, resampled from each series' grid; None = each series' native voxels (the
            book's, and what checkpoints without this field mean). Not a shape: the weights do
            not depend on it, but training and diagnosis must cut crops alike.
    """

    in_channels: int = 1
    conv_channels: int = 8
    crop_shape_irc: tuple[int, int, int] = (32, 48, 48)
    n_classes: int = 2
    block_batchnorm: bool = False
    centre_head: bool = False
    crop_spacing_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        # Stored checkpoints hold lists (plain data); accept them and keep a tuple.
        object.__setattr__(self, "crop_shape_irc", tuple(int(n) for n in self.crop_shape_irc))
        if self.crop_spacing_mm is not None:
            object.__setattr__(self, "crop_spacing_mm", check_crop_spacing(self.crop_spacing_mm))
        if len(self.crop_shape_irc) != 3 or any(n <= 0 or n % 2**_N_BLOCKS for n in self.crop_shape_irc):
            raise ValueError(
                f"crop_shape_irc must be 3 positive sizes divisible by {2**_N_BLOCKS}, got {self.crop_shape_irc}"
            )
        if self.in_channels < 1 or self.conv_channels < 1 or self.n_classes < 2:
            raise ValueError(f"ClassifierConfig needs positive sizes and n_classes >= 2, got {self}")

    @property
    def head_features(self) -> int:
        """Inputs of ``head_linear``: last block's channels times its voxels (64*2*3*3 = 1152)."""
        voxels = math.prod(n // 2**_N_BLOCKS for n in self.crop_shape_irc)
        return self.conv_channels * 2 ** (_N_BLOCKS - 1) * voxels

    @property
    def centre_features(self) -> int:
        """Extra head inputs with ``centre_head``: 2x2x2 cells of block2 and block3 (16*8 + 32*8 = 384)."""
        return 8 * (self.conv_channels * 2 + self.conv_channels * 4) if self.centre_head else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop_shape_irc"] = list(self.crop_shape_irc)
        data["crop_spacing_mm"] = None if self.crop_spacing_mm is None else list(self.crop_spacing_mm)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return cls(**data)


class LunaBlock(nn.Module):
    """Two 3x3x3 convolutions with ReLU (optionally each followed by BatchNorm), then 2x2x2 max
    pooling. (N, C_in, I, R, C) -> (N, C, I/2, R/2, C/2)."""

    def __init__(self, in_channels: int, conv_channels: int, batchnorm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm3d(conv_channels) if batchnorm else nn.Identity()
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(conv_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm3d(conv_channels) if batchnorm else nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.maxpool(x)


class LunaClassifier(nn.Module):
    """The book's ``LunaModel``.

    Input: (N, 1, 32, 48, 48) float32 HU crops (clipped to -1000..1000; the input BatchNorm
    normalises). Output: ``(logits, probabilities)``, each (N, n_classes); probabilities are the
    softmax of the logits, column 1 is the positive class (nodule, or malignant).
    """

    arch = CLASSIFIER_ARCH

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        channels = self.config.conv_channels
        # The book calls the input BatchNorm the "tail"; the name is kept for its weights.
        self.tail_batchnorm = nn.BatchNorm3d(self.config.in_channels)
        norm = self.config.block_batchnorm
        self.block1 = LunaBlock(self.config.in_channels, channels, norm)
        self.block2 = LunaBlock(channels, channels * 2, norm)
        self.block3 = LunaBlock(channels * 2, channels * 4, norm)
        self.block4 = LunaBlock(channels * 4, channels * 8, norm)
        self.head_linear = nn.Linear(self.config.head_features + self.config.centre_features, self.config.n_classes)
        self.head_softmax = nn.Softmax(dim=1)
        init_weights_like_book(self)
        if norm or self.config.centre_head:
            # The book's fan-out initialisation gives the 1152 -> 2 head weights of std 1, hence
            # logits in the tens once BatchNorm makes the features unit-sized; torch's own (fan-in)
            # initialisation starts the head near zero. Either option already leaves the book's
            # shape, so nothing is lost by leaving its head initialisation too.
            self.head_linear.reset_parameters()

    def forward(self, input_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x2 = self.block2(self.block1(self.tail_batchnorm(input_batch)))
        x3 = self.block3(x2)
        # flatten() rather than the book's view(): it also works on channels-last activations.
        features = self.block4(x3).flatten(start_dim=1)
        if self.config.centre_head:
            features = torch.cat([features, _centre_cells(x2), _centre_cells(x3)], dim=1)
        logits = self.head_linear(features)
        return logits, self.head_softmax(logits)


def _centre_cells(x: torch.Tensor) -> torch.Tensor:
    """The 2x2x2 cells around the centre of (N, C, I, R, C) activations, flattened to (N, C*8).

    Crop sides divide by 16, so every side here is even and the centre lies between cells
    ``n//2 - 1`` and ``n//2``: the crop's centre voxel (``crop // 2``) falls in them."""
    i, r, c = (n // 2 for n in x.shape[2:])
    return x[:, :, i - 1 : i + 1, r - 1 : r + 1, c - 1 : c + 1].flatten(start_dim=1)
