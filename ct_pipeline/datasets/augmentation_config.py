"""What the training batches' random augmentation does (:func:`~ct_pipeline.datasets.augment_batch` does it).

Kept apart from the torch code of :mod:`ct_pipeline.datasets.augmentation` so that the training
configuration, and the CLI's help that shows its defaults, load without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ct_pipeline.errors import BadInputError

# The datasets' default HU clip window (their ``hu_range``): the HU calibration change clips to it.
HU_WINDOW = (-1000.0, 1000.0)
# What :meth:`AugmentationConfig.scanner_robust` can add, each on its own.
SCANNER_PARTS = ("calibration", "noise", "kernel")


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
        noise_max_hu: when > 0, each sample's noise SD is drawn from [noise_hu, noise_max_hu]
            instead, so one batch holds quiet and noisy samples (sites differ in dose and kernel).
        hu_scale_fraction / hu_offset_hu: each sample's HU are mapped to hu * (1 + a) + b, a
            drawn from [-f, f], b from [-o, o] HU: another scanner's calibration. The scale pivots
            on water (0 HU), where scanners are calibrated, so air moves by -1000 a + b like a
            miscalibrated scanner's; the result is clipped to the datasets' window
            (:data:`HU_WINDOW`), because diagnosis clips such a scanner's air back to -1000 and
            the model should not learn from air darker than it will ever meet.
        kernel_probability: share of samples whose reconstruction kernel is changed, when
            ``blur_sigma_max_vox`` or ``sharpen_amount_max`` is on (each changed sample is
            blurred or sharpened with equal odds when both are).
        blur_sigma_max_vox: a soft kernel: in-plane (row, col) Gaussian blur of SD drawn from
            [0, s] voxels; never across slices or the context-slice channels.
        sharpen_amount_max: a sharp kernel: in-plane unsharp mask x + k (x - blur_1vox(x)), k
            drawn from [0, m].

    The intensity changes (calibration, then kernel, then noise) draw their randomness after the
    geometric and noise draws, and only when one of them is on: with them off, a seed gives what
    it gave before they existed.
    """

    mirror: bool = True
    shift_fraction: float = 0.1
    scale_fraction: float = 0.2
    rotation_deg: float = 180.0
    noise_hu: float = 25.0
    noise_max_hu: float = 0.0
    hu_scale_fraction: float = 0.0
    hu_offset_hu: float = 0.0
    kernel_probability: float = 0.5
    blur_sigma_max_vox: float = 0.0
    sharpen_amount_max: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            ("shift_fraction", self.shift_fraction, 0.0, 1.0),
            ("scale_fraction", self.scale_fraction, 0.0, 0.9),
            ("rotation_deg", self.rotation_deg, 0.0, 180.0),
            ("noise_hu", self.noise_hu, 0.0, 10_000.0),
            ("noise_max_hu", self.noise_max_hu, 0.0, 10_000.0),
            ("hu_scale_fraction", self.hu_scale_fraction, 0.0, 0.5),
            ("hu_offset_hu", self.hu_offset_hu, 0.0, 500.0),
            ("kernel_probability", self.kernel_probability, 0.0, 1.0),
            ("blur_sigma_max_vox", self.blur_sigma_max_vox, 0.0, 5.0),
            ("sharpen_amount_max", self.sharpen_amount_max, 0.0, 5.0),
        ]
        for name, value, low, high in checks:
            if not (low <= float(value) <= high):
                raise BadInputError(f"augmentation {name} = {value}: expected a number from {low} to {high} (0 = off)")
        if 0 < self.noise_max_hu < self.noise_hu:
            raise BadInputError(
                f"augmentation noise_max_hu = {self.noise_max_hu} is below noise_hu = {self.noise_hu}: "
                "expected 0 (a fixed SD) or at least noise_hu"
            )

    @classmethod
    def off(cls) -> AugmentationConfig:
        return cls(mirror=False, shift_fraction=0.0, scale_fraction=0.0, rotation_deg=0.0, noise_hu=0.0)

    @classmethod
    def book_segmentation(cls) -> AugmentationConfig:
        """The book's segmentation settings (``offset=0.03``; its 2D shift never worked, ours does)."""
        return cls(mirror=True, shift_fraction=0.03, scale_fraction=0.2, rotation_deg=180.0, noise_hu=25.0)

    def scanner_robust(self, parts: tuple[str, ...] = SCANNER_PARTS) -> AugmentationConfig:
        """This config plus the intensity changes that tell scanners apart (the recipe's ``--intensity-aug``).

        Args:
            parts: which of :data:`SCANNER_PARTS` to add ("calibration", "noise", "kernel"), so
                that each can be measured alone.

        Ranges meant to cover real sites, not one generator: calibration of soft tissue and
        parenchyma differs between vendors, kVp and phantoms by a few per cent and tens of HU (HU
        scale +-10 %, offset +-50 HU; ``ct synth --style site-b``: +-5 %, +-40 HU); image noise
        of low-dose to standard-dose lung CT is about 20-75 HU (noise SD up to 75 HU, from the
        config's ``noise_hu``); soft and sharp kernels span about a pixel of blur and an unsharp
        amount near 1 (blur SD up to 1 voxel, sharpening up to 1.0), on half the samples.
        """
        unknown = sorted(set(parts) - set(SCANNER_PARTS))
        if unknown:
            raise BadInputError(f"intensity augmentation part {unknown[0]!r} is not one of {', '.join(SCANNER_PARTS)}")
        changes: dict[str, float] = {}
        if "calibration" in parts:
            changes.update(hu_scale_fraction=0.1, hu_offset_hu=50.0)
        if "noise" in parts:
            changes.update(noise_max_hu=max(75.0, self.noise_hu))
        if "kernel" in parts:
            changes.update(kernel_probability=0.5, blur_sigma_max_vox=1.0, sharpen_amount_max=1.0)
        return dataclasses.replace(self, **changes)

    @property
    def geometric(self) -> bool:
        return self.mirror or self.shift_fraction > 0 or self.scale_fraction > 0 or self.rotation_deg > 0

    @property
    def noisy(self) -> bool:
        return self.noise_hu > 0 or self.noise_max_hu > 0

    @property
    def intensity(self) -> bool:
        """Whether a per-sample intensity change (calibration, noise level, kernel) is on."""
        return self.noise_max_hu > 0 or self.calibration or self.kernel

    @property
    def calibration(self) -> bool:
        return self.hu_scale_fraction > 0 or self.hu_offset_hu > 0

    @property
    def kernel(self) -> bool:
        return self.kernel_probability > 0 and (self.blur_sigma_max_vox > 0 or self.sharpen_amount_max > 0)

    def enabled(self) -> bool:
        return self.geometric or self.noisy or self.intensity
