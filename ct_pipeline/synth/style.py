"""Phantom families (``ct synth --style``): what changes between scanners and sites.

A recipe tuned on one generator's images learns that generator. ``standard`` is the original
family (its files are unchanged by this module). ``site-b`` changes what a real second site
changes: the scanner's HU calibration and noise level, the reconstruction kernel (soft or
sharp), pixel and slice spacing, more flipped and oblique series, contrast-enhanced and denser
vessels, denser lungs, and nodules of other textures and places (pure ground-glass, more
part-solid ones, more on the pleura, some on vessels). Every change draws from its own random
stream, so a ``standard`` series is byte-identical to what ``ct synth`` wrote before styles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ct_pipeline.synth.layout import SeriesLayout, SizePreset


@dataclass(frozen=True)
class SynthStyle:
    """One phantom family. Ranges are (low, high) of uniform draws per series; None: the standard's.

    Attributes:
        name: what ``--style`` calls it.
        oblique_fraction / flip_fraction: default share of tilted / axis-flipped series.
        presets: per size, replacements of :class:`SizePreset` fields (spacing, field of view).
        hu_scale / hu_offset: the scanner's calibration, stored = scale * HU + offset.
        noise_sd: image noise SD (HU).
        kernel_sharp_share: share of series with a sharp kernel (unsharp mask, more edge
            contrast); the others get a soft one (in-plane Gaussian blur of ``soft_blur_mm``).
        soft_blur_mm / sharp_amount: kernel strength ranges.
        lung_hu / blood_hu: parenchyma and vessel (contrast) densities.
        vessel_min_radius_voxels / vessel_min_radius_mm: vessels end when thinner than this many
            pixels and this many mm (standard 0.3 and 0.5: smaller means finer, denser trees).
        side_branch_probability: share of segments with a side branch (standard 0.8).
        ground_glass_share: share of nodules redrawn as pure ground-glass (no solid core).
        part_solid_share: share of nodules >= 6 mm redrawn as part-solid.
        juxtapleural_share / juxtavascular_share: share of nodules moved onto the pleura / onto
            a vessel.
    """

    name: str
    oblique_fraction: float = 0.1
    flip_fraction: float = 0.15
    presets: dict[str, dict] = dataclasses.field(default_factory=dict)
    hu_scale: tuple[float, float] | None = None
    hu_offset: tuple[float, float] | None = None
    noise_sd: tuple[float, float] | None = None
    kernel_sharp_share: float = 0.0
    soft_blur_mm: tuple[float, float] | None = None
    sharp_amount: tuple[float, float] = (0.3, 0.8)
    lung_hu: tuple[float, float] | None = None
    blood_hu: tuple[float, float] | None = None
    vessel_min_radius_voxels: float = 0.3
    vessel_min_radius_mm: float = 0.5
    side_branch_probability: float = 0.8
    ground_glass_share: float = 0.0
    part_solid_share: float = 0.0
    ground_glass_hu: tuple[float, float] = (-700.0, -500.0)
    juxtapleural_share: float = 0.0
    juxtavascular_share: float = 0.0

    @property
    def is_standard(self) -> bool:
        return self.name == "standard"

    def preset(self, size: str, base: SizePreset) -> SizePreset:
        return dataclasses.replace(base, **self.presets.get(size, {}))

    def anatomy_hu(self, rng: np.random.Generator, hu: dict[str, float]) -> dict[str, float]:
        """The anatomy's densities with this style's ranges drawn in."""
        changed = dict(hu)
        for key, span in (("lung", self.lung_hu), ("blood", self.blood_hu), ("noise_sd", self.noise_sd)):
            if span is not None:
                changed[key] = float(rng.uniform(*span))
        return changed

    def reconstruct(self, rng: np.random.Generator, volume_hu: np.ndarray, layout: SeriesLayout) -> None:
        """In place, before noise: the kernel (soft blur or sharpening, in-plane) and the calibration."""
        if self.soft_blur_mm is not None:
            pixel_mm = layout.spacing_xyz[0]
            if rng.uniform() < self.kernel_sharp_share:
                amount = float(rng.uniform(*self.sharp_amount))
                smooth = ndimage.gaussian_filter(volume_hu, sigma=(0.0, 1.0, 1.0))
                volume_hu += np.float32(amount) * (volume_hu - smooth)
            else:
                sigma = float(rng.uniform(*self.soft_blur_mm)) / pixel_mm
                ndimage.gaussian_filter(volume_hu, sigma=(0.0, sigma, sigma), output=volume_hu)
        if self.hu_scale is not None and self.hu_offset is not None:
            scale, offset = float(rng.uniform(*self.hu_scale)), float(rng.uniform(*self.hu_offset))
            volume_hu *= np.float32(scale)
            volume_hu += np.float32(offset)


STANDARD = SynthStyle(name="standard")

SITE_B = SynthStyle(
    name="site-b",
    oblique_fraction=1 / 3,
    flip_fraction=1 / 3,
    presets={
        "small": {"fov_mm": (300.0, 380.0), "slice_spacings_mm": (2.5, 3.0, 4.0, 5.0)},
        "medium": {"fov_mm": (300.0, 400.0), "slice_spacings_mm": (0.8, 1.0, 1.25, 2.0, 3.0)},
        "full": {"fov_mm": (300.0, 420.0), "slice_spacings_mm": (0.5, 0.625, 1.0, 2.0, 3.0)},
    },
    hu_scale=(0.95, 1.05),
    hu_offset=(-40.0, 40.0),
    noise_sd=(35.0, 75.0),
    kernel_sharp_share=0.4,
    soft_blur_mm=(0.4, 1.2),
    lung_hu=(-880.0, -820.0),
    blood_hu=(40.0, 220.0),
    vessel_min_radius_voxels=0.2,
    vessel_min_radius_mm=0.35,
    side_branch_probability=0.95,
    ground_glass_share=0.15,
    part_solid_share=0.25,
    juxtapleural_share=0.3,
    juxtavascular_share=0.25,
)

STYLES: dict[str, SynthStyle] = {s.name: s for s in (STANDARD, SITE_B)}


def juxtavascular_center(
    rng: np.random.Generator, segments, radius_mm: float, fits, tries: int = 60
) -> np.ndarray | None:
    """A centre touching a vessel of radius >= 1 mm (the nodule's edge on the vessel's wall), or None.

    ``fits(center, radius)`` says whether a sphere lies in the lung and clear of other nodules.
    """
    thick = [s for s in segments if s.end_radius_mm >= 1.0]
    if not thick:
        return None
    for _ in range(tries):
        seg = thick[int(rng.integers(len(thick)))]
        start, end = np.array(seg.start_mm), np.array(seg.end_mm)
        t = float(rng.uniform(0.2, 0.8))
        axis = end - start
        norm = float(np.linalg.norm(axis))
        if norm < 1e-6:
            continue
        other = np.cross(axis / norm, rng.normal(size=3))
        if np.linalg.norm(other) < 1e-6:
            continue
        side = other / np.linalg.norm(other)
        vessel_radius = seg.start_radius_mm + t * (seg.end_radius_mm - seg.start_radius_mm)
        center = start + t * axis + side * (vessel_radius + 0.7 * radius_mm)
        if fits(center, radius_mm):
            return center
    return None


def restyle_nodules(rng: np.random.Generator, style: SynthStyle, nodules: list, place_wall, place_vessel) -> list:
    """The nodules with this style's textures and places (a new list; the standard's is returned as is).

    ``place_wall(radius, others)`` / ``place_vessel(radius, others)`` give a new centre or None.
    """
    if style.is_standard:
        return nodules
    restyled: list = []
    for i, nodule in enumerate(nodules):
        others = restyled + nodules[i + 1 :]
        changes: dict = {}
        texture = rng.uniform()
        if texture < style.ground_glass_share:
            changes.update(kind="ground-glass", ground_glass_hu=float(rng.uniform(*style.ground_glass_hu)), spicules=())
        elif nodule.diameter_mm >= 6.0 and texture < style.ground_glass_share + style.part_solid_share:
            changes.update(kind="part-solid", ground_glass_hu=float(rng.uniform(*style.ground_glass_hu)))
        place = rng.uniform()
        reach = nodule.max_radius_mm
        if place < style.juxtapleural_share and not nodule.juxtapleural:
            center = place_wall(reach, others)
            if center is not None:
                changes.update(center_mm=tuple(float(v) for v in center), juxtapleural=True)
        elif place < style.juxtapleural_share + style.juxtavascular_share and not nodule.juxtapleural:
            center = place_vessel(reach, others)
            if center is not None:
                changes.update(center_mm=tuple(float(v) for v in center))
        restyled.append(dataclasses.replace(nodule, **changes))
    return restyled


def min_vessel_radius_mm(style: SynthStyle, layout: SeriesLayout) -> float:
    """Vessels thinner than this end: a fraction of a pixel, and never below the style's floor."""
    return max(style.vessel_min_radius_mm, style.vessel_min_radius_voxels * min(layout.spacing_xyz[:2]))
