"""What to generate: the config, and each series' UID, grid and geometry drawn from it.

The grid types and the frames they relate (anatomy, canonical, stored, patient) are in
:mod:`~ct_pipeline.synth.layout`; :func:`plan_series` draws one :class:`SeriesLayout` per series.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ct_pipeline.errors import BadInputError
from ct_pipeline.geometry import Geometry
from ct_pipeline.paths import UID_MAX_LEN
from ct_pipeline.pose import rotation_matrix
from ct_pipeline.synth.layout import SIZES, SeriesLayout, SizePreset
from ct_pipeline.synth.streams import Stream, dataset_rng, series_rng
from ct_pipeline.synth.style import STYLES, SynthStyle

SizeName = Literal["small", "medium", "full"]
UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.99999"  # LUNA16's TCIA root with a made-up "synthetic" branch
MAX_SEED = 2**32 - 1
# Axis flips (z, y, x) allowed for non-identity series: always two axes, so det(direction) = +1.
_FLIPS: tuple[tuple[bool, bool, bool], ...] = ((False, True, True), (True, True, False), (True, False, True))


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Options of ``ct synth`` (keyword-only).

    Attributes:
        out_dir: the data set's root folder (LUNA16 layout: subset0/ and the CSVs).
        n_series: number of CT series (>= 1).
        seed: 0 .. 2**32-1; the same seed and options give byte-identical files.
        size: "small" (128x128 slices, for tests), "medium" (256x256, for the demo) or "full" (512x512).
        dicom: also write every series as a DICOM folder under ``dicom/<uid>/``.
        style: the phantom family (:mod:`ct_pipeline.synth.style`): "standard" or "site-b".
        oblique_fraction: share of series with a slightly rotated direction (0..1); when > 0 at
            least one series is oblique. None: the style's (standard 0.1).
        flip_fraction: share of series stored with two array axes flipped (0..1); None: the
            style's (standard 0.15).
        overwrite: replace an earlier ``ct synth`` data set in the folder (only files its manifest
            lists, unchanged since, are deleted; see :mod:`ct_pipeline.synth.manifest`).
        follow_up: also write a later scan of each series under ``followup/``, with known pose
            and nodule changes (:mod:`ct_pipeline.synth.followup`).
    """

    out_dir: Path
    n_series: int
    seed: int = 0
    size: SizeName = "full"
    dicom: bool = False
    style: str = "standard"
    oblique_fraction: float | None = None
    flip_fraction: float | None = None
    overwrite: bool = False
    follow_up: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if not _is_whole(self.n_series) or not 1 <= self.n_series <= 10_000:
            raise BadInputError(f"--series {self.n_series!r} must be a whole number from 1 to 10000")
        if not _is_whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise BadInputError(f"--seed {self.seed!r} must be a whole number from 0 to {MAX_SEED}")
        object.__setattr__(self, "n_series", int(self.n_series))
        object.__setattr__(self, "seed", int(self.seed))
        if self.size not in SIZES:
            raise BadInputError(f"--size {self.size!r} must be one of {', '.join(SIZES)}")
        if self.style not in STYLES:
            raise BadInputError(f"--style {self.style!r} must be one of {', '.join(STYLES)}")
        for name in ("oblique_fraction", "flip_fraction"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(STYLES[self.style], name))
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise BadInputError(f"{name.replace('_', '-')} {value!r} must be a number from 0 to 1")

    @property
    def style_spec(self) -> SynthStyle:
        return STYLES[self.style]

    @property
    def preset(self) -> SizePreset:
        return self.style_spec.preset(self.size, SIZES[self.size])


def series_uid_for(seed: int, index: int) -> str:
    """Deterministic LUNA16-looking UID: root.seed.(index+1).<digits from the seed>, <= 64 chars.

    Leaves room for a ".<slice>" suffix of up to 4 digits within the 64-character limit.
    """
    prefix = f"{UID_ROOT}.{seed}.{index + 1}."
    digits = series_rng(seed, index, Stream.UID_DIGITS).integers(0, 10, size=UID_MAX_LEN)
    room = UID_MAX_LEN - 5 - len(prefix)
    tail = "".join(str(d) for d in digits[: max(room, 1)])
    tail = str(int(tail[0]) % 9 + 1) + tail[1:]  # no leading zero in a component
    return prefix + tail


def direction_kinds(config: SynthConfig) -> list[tuple[bool, tuple[bool, bool, bool]]]:
    """(oblique, flips_irc) per series: counts from the fractions, positions shuffled by the seed."""
    n = config.n_series
    n_oblique = math.ceil(config.oblique_fraction * n - 1e-9) if config.oblique_fraction > 0 else 0
    n_flipped = round(config.flip_fraction * n)
    order = dataset_rng(config.seed, Stream.DIRECTION_ORDER).permutation(n)
    oblique = set(order[:n_oblique].tolist())
    flipped = order[n - n_flipped :].tolist() if n_flipped else []
    kinds: list[tuple[bool, tuple[bool, bool, bool]]] = [(i in oblique, (False, False, False)) for i in range(n)]
    for rank, i in enumerate(flipped):
        kinds[i] = (kinds[i][0], _FLIPS[(config.seed + rank) % len(_FLIPS)])
    return kinds


def plan_series(config: SynthConfig, index: int, oblique: bool, flips_irc: tuple[bool, bool, bool]) -> SeriesLayout:
    """Draw one series' grid size, spacing, origin and direction from its own random stream."""
    preset = config.preset
    rng = series_rng(config.seed, index, Stream.LAYOUT)
    fov_mm = float(round(rng.uniform(*preset.fov_mm)))
    spacing_xy = fov_mm / preset.cols  # integer / power of two: exact in binary, like 0.703125
    spacing_z = float(rng.choice(preset.slice_spacings_mm))
    wanted_coverage_mm = rng.uniform(*preset.coverage_mm)
    n_slices = int(np.clip(round(wanted_coverage_mm / spacing_z), *preset.slices))
    shape_irc = (n_slices, preset.cols, preset.cols)
    spacing_xyz = (spacing_xy, spacing_xy, spacing_z)

    # The body sits near the middle, a little anterior of centre to leave room for the table.
    # The lungs fill most of the scan's length: apex near the top slice, base above the bottom
    # one; on short scans (thin slices, capped slice count) the lung bases are cut off, as in real ones.
    coverage_mm = n_slices * spacing_z
    lung_height_mm = rng.uniform(190.0, 250.0)
    apex_z_mm = coverage_mm * rng.uniform(0.9, 0.97)
    body_center_mm = (
        round(fov_mm / 2 + rng.uniform(-0.03, 0.03) * fov_mm, 3),
        round(fov_mm / 2 - rng.uniform(0.0, 0.06) * fov_mm, 3),
        round(apex_z_mm - lung_height_mm, 3),
    )

    # Patient position of canonical voxel (0,0,0): body axis near x = y = 0, table height like LUNA16.
    canonical_origin = np.array(
        [-body_center_mm[0], -body_center_mm[1], round(rng.uniform(-360.0, -60.0), 2)], dtype=np.float64
    )
    # Drawn last, so that a series differs from its upright twin only by the rotation.
    rotation = np.eye(3)
    if oblique:
        axis = np.array([1.0, rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)])  # mostly gantry-like tilt about x
        rotation = rotation_matrix(axis, math.radians(rng.uniform(4.0, 12.0)) * rng.choice([-1.0, 1.0]))
    flip_signs = np.array([-1.0 if f else 1.0 for f in flips_irc[::-1]])  # xyz order
    direction = rotation @ np.diag(flip_signs)
    extent_cri = np.array([shape_irc[2] - 1, shape_irc[1] - 1, shape_irc[0] - 1], dtype=np.float64) * spacing_xyz
    shift = np.where(flip_signs < 0, extent_cri, 0.0)  # stored voxel 0 is the canonical far end on flipped axes
    origin_xyz = canonical_origin + rotation @ shift
    geometry = Geometry(
        origin_xyz=tuple(float(round(v, 6)) for v in origin_xyz),  # type: ignore[arg-type]
        spacing_xyz=spacing_xyz,
        direction=tuple(float(v) + 0.0 for v in direction.ravel()),  # + 0.0 turns -0.0 into 0.0
    )
    return SeriesLayout(
        index=index,
        series_uid=series_uid_for(config.seed, index),
        shape_irc=shape_irc,
        geometry=geometry,
        flips_irc=flips_irc,
        oblique=oblique,
        body_center_mm=body_center_mm,
        lung_height_mm=round(lung_height_mm, 3),
    )
