"""One series in memory: :func:`generate_series` draws the anatomy, vessels, nodules, candidates and noise.

Each step draws from its own named stream (:mod:`~ct_pipeline.synth.streams`), so a series does
not change when another one does, and the same config gives the same voxels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ct_pipeline.pose import RigidPose, repose_hu
from ct_pipeline.synth.candidates import Candidates, make_candidates
from ct_pipeline.synth.config import SynthConfig
from ct_pipeline.synth.followup import FollowUpPlan, moved
from ct_pipeline.synth.layout import PatientXyz, SeriesLayout
from ct_pipeline.synth.nodules import Nodule, draw_nodules, fits_in_lung, place_center, sample_nodules
from ct_pipeline.synth.noise import add_noise
from ct_pipeline.synth.phantom import Phantom, render_phantom, sample_anatomy
from ct_pipeline.synth.streams import Stream, series_rng
from ct_pipeline.synth.style import SynthStyle, juxtavascular_center, restyle_nodules
from ct_pipeline.synth.vessels import Segment, draw_vessels, grow_vessel_trees


@dataclass(frozen=True, eq=False)
class SyntheticSeries:
    """One generated series in memory.

    Attributes:
        layout: grid, geometry and UID.
        hu: int16, shape (index, row, col) as stored (geometry applies to it).
        lung_mask: bool, same shape and orientation as ``hu``: lung parenchyma.
        nodules: in anatomy-frame mm; ``nodule_xyz`` gives their patient coordinates.
        candidates: in anatomy-frame mm; ``candidate_xyz`` gives patient coordinates.
    """

    layout: SeriesLayout
    hu: np.ndarray
    lung_mask: np.ndarray
    nodules: tuple[Nodule, ...]
    candidates: Candidates

    @property
    def nodule_xyz(self) -> PatientXyz:
        """Nodule centres, patient mm, shape (n, 3)."""
        centers = np.array([n.center_mm for n in self.nodules]).reshape(-1, 3)
        return self.layout.anatomy_mm_to_xyz(centers)

    @property
    def candidate_xyz(self) -> PatientXyz:
        """Candidate centres, patient mm, shape (n, 3)."""
        return self.layout.anatomy_mm_to_xyz(self.candidates.centers_mm)


def generate_series(
    config: SynthConfig, layout: SeriesLayout, follow_up: FollowUpPlan | None = None
) -> SyntheticSeries:
    """Draw one chest CT with nodules and candidates (no files written).

    ``follow_up``: draw the series' follow-up scan instead (:mod:`~ct_pipeline.synth.followup`):
    the same anatomy with the plan's nodules, pose and a fresh noise draw, under its own UID.
    """
    seed, index, style = config.seed, layout.index, config.style_spec
    anatomy = sample_anatomy(series_rng(seed, index, Stream.ANATOMY), layout)
    if not style.is_standard:  # the style's draws come from their own streams
        styled_hu = style.anatomy_hu(series_rng(seed, index, Stream.STYLE_ANATOMY), anatomy.hu)
        anatomy = dataclasses.replace(anatomy, hu=styled_hu)
    phantom = render_phantom(anatomy, layout)
    segments = grow_vessel_trees(series_rng(seed, index, Stream.VESSELS), phantom, layout, style)
    draw_vessels(phantom.volume_hu, layout, phantom, segments)
    nodules = sample_nodules(series_rng(seed, index, Stream.NODULES), phantom, layout)
    nodules = _restyle(style, series_rng(seed, index, Stream.STYLE_NODULES), phantom, layout, segments, nodules)
    noise_stream = Stream.NOISE
    if follow_up is not None:
        nodules = follow_up.revise(series_rng(seed, index, Stream.FOLLOW_UP_NODULES), phantom, layout, nodules)
        phantom = _reposed(phantom, layout, follow_up.pose)
        nodules = [moved(n, layout, follow_up.pose) for n in nodules]
        noise_stream = Stream.FOLLOW_UP_NOISE
    draw_nodules(phantom.volume_hu, layout, phantom, nodules)
    if not style.is_standard:
        style.reconstruct(series_rng(seed, index, Stream.STYLE_KERNEL), phantom.volume_hu, layout)
    rng = series_rng(seed, index, Stream.CANDIDATES)
    n_negative = int(rng.integers(*config.preset.candidates_per_series, endpoint=True))
    candidates = make_candidates(rng, phantom, layout, segments, nodules, n_negative)
    hu = add_noise(phantom.volume_hu, layout, series_rng(seed, index, noise_stream), anatomy.hu["noise_sd"])
    if follow_up is not None:
        layout = dataclasses.replace(layout, series_uid=follow_up.series_uid)
    return SyntheticSeries(
        layout=layout,
        hu=hu,
        lung_mask=np.ascontiguousarray(layout.to_stored(phantom.lung_mask)),
        nodules=tuple(nodules),
        candidates=candidates,
    )


def _reposed(phantom: Phantom, layout: SeriesLayout, pose: RigidPose) -> Phantom:
    """The phantom (anatomy and vessels, no nodules yet) as the patient lies in ``pose``: resampled in
    patient space on the stored grid (flipping is its own inverse: canonical again after)."""
    volume = layout.to_stored(repose_hu(layout.to_stored(phantom.volume_hu), layout.geometry, pose))
    lung = layout.to_stored(repose_hu(layout.to_stored(phantom.lung_mask), layout.geometry, pose) >= 0.5)
    return dataclasses.replace(phantom, volume_hu=np.ascontiguousarray(volume), lung_mask=np.ascontiguousarray(lung))


def _restyle(
    style: SynthStyle,
    rng: np.random.Generator,
    phantom: Phantom,
    layout: SeriesLayout,
    segments: list[Segment],
    nodules: list[Nodule],
) -> list[Nodule]:
    """The style's nodule textures and places (on the pleura, on vessels)."""

    def place_wall(radius: float, others: list) -> np.ndarray | None:
        return place_center(rng, phantom, layout, radius, True, others)

    def place_vessel(radius: float, others: list) -> np.ndarray | None:
        return juxtavascular_center(
            rng, segments, radius, lambda center, r: fits_in_lung(phantom, layout, center, r, others)
        )

    return restyle_nodules(rng, style, nodules, place_wall, place_vessel)
