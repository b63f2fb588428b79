"""What the training batches' random augmentation does (:func:`~ct_pipeline.datasets.augment_batch` does it).

Kept apart from the torch code of :mod:`ct_pipeline.datasets.augmentation` so that the training
configuration, and the CLI's help that shows its defaults, load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ct_pipeline.errors import BadInputError


@dataclass(frozen=True)
class AugmentationConfig:
    """What :func:`augment_batch` does; a magnitude of 0 (or ``mirror=False``) switches a part off.

    The defaults are the book's classification settings (``flip``, ``offset=0.1``, ``scale=0.2``,
    ``rotate``, ``noise=25.0``); :meth:`book_segmentation` gives its segmentation ones.

    Attributes:
        mirror: flip each spatial axis with probability 1/2 (index, row and col for 3D crops;
            row and col for 2D slices, never the context-slice channels).
        shift_fraction: largest shift along each axis as a fraction of half the side (the
            book's ``offset`` in grid_sample units): 0.1 on a 48-voxel side is up to 2.4 voxels.
        scale_fraction: each axis is magnified by a factor drawn from [1 - s, 1 + s].
        rotation_deg: rotation about the slice axis drawn from [-r, r] degrees; 180 = any angle.
        noise_hu: standard deviation of the added Gaussian noise, in HU (the crops are HU).
    """

    mirror: bool = True
    shift_fraction: float = 0.1
    scale_fraction: float = 0.2
    rotation_deg: float = 180.0
    noise_hu: float = 25.0

    def __post_init__(self) -> None:
        checks = [
            ("shift_fraction", self.shift_fraction, 0.0, 1.0),
            ("scale_fraction", self.scale_fraction, 0.0, 0.9),
            ("rotation_deg", self.rotation_deg, 0.0, 180.0),
            ("noise_hu", self.noise_hu, 0.0, 10_000.0),
        ]
        for name, value, low, high in checks:
            if not (low <= float(value) <= high):
                raise BadInputError(f"augmentation {name} = {value}: expected a number from {low} to {high} (0 = off)")

    @classmethod
    def off(cls) -> AugmentationConfig:
        return cls(mirror=False, shift_fraction=0.0, scale_fraction=0.0, rotation_deg=0.0, noise_hu=0.0)

    @classmethod
    def book_segmentation(cls) -> AugmentationConfig:
        """The book's segmentation settings (``offset=0.03``; its 2D shift never worked, ours does)."""
        return cls(mirror=True, shift_fraction=0.03, scale_fraction=0.2, rotation_deg=180.0, noise_hu=25.0)

    @property
    def geometric(self) -> bool:
        return self.mirror or self.shift_fraction > 0 or self.scale_fraction > 0 or self.rotation_deg > 0

    def enabled(self) -> bool:
        return self.geometric or self.noise_hu > 0
