"""The book's weight initialisation, shared by the classifier and the U-Net."""

from __future__ import annotations

import math

from torch import nn


def init_weights_like_book(model: nn.Module) -> None:
    """The book's initialisation for fresh models (both networks use it).

    Kaiming-normal weights (fan_out, ReLU gain); biases drawn from ``normal_(mean=-bound,
    std=bound)`` with ``bound = 1/sqrt(fan_out)``. That bias call looks like a typo for
    ``uniform_(-bound, bound)`` in the book, but it is what the book's models started from,
    so it is kept as is.
    """
    init_types = (nn.Linear, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for module in model.modules():
        if type(module) in init_types:
            nn.init.kaiming_normal_(module.weight.data, a=0, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                _, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight.data)
                bound = 1 / math.sqrt(fan_out)
                nn.init.normal_(module.bias, -bound, bound)
