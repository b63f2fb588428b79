"""The data set's README.txt: how it was made, what is in it, and what it is not (patient data)."""

from __future__ import annotations

from ct_pipeline.synth.config import SynthConfig


def readme_text(config: SynthConfig, direction_kinds: dict[str, str]) -> str:
    """README.txt for the data set ``config`` writes; ``direction_kinds``: series UID -> direction
    kind ("identity", "flipped", "oblique", "oblique+flipped"), in generation order."""
    kinds = ", ".join(f"{uid}: {kind}" for uid, kind in direction_kinds.items() if kind != "identity")
    return f"""Synthetic chest CT data for testing `ct` (NOT patient data; not for any clinical or scientific use).

Written by: ct synth {config.out_dir} --series {config.n_series} --seed {config.seed} --size {config.size}\
{" --dicom" if config.dicom else ""}{"" if config.style == "standard" else f" --style {config.style}"}\
{" --follow-up" if config.follow_up else ""} \
--oblique-fraction {config.oblique_fraction:.4g} --flip-fraction {config.flip_fraction:.4g}

Layout (LUNA16's): subset0/<seriesuid>.mhd/.raw (int16 HU), candidates.csv, annotations.csv,
annotations_with_malignancy.csv{"; dicom/<seriesuid>/ holds each series as DICOM" if config.dicom else ""}.
nodule_truth.csv: each nodule's volume (mm^3, inside its lobulated surface, spicules excluded), kind
and whether it touches the lung wall, for checking volumetry.
Coordinates are patient mm (x, y, z), valid under each series' origin, spacing and direction.

What is in a series: air, patient table, body wall (fat, muscle), ribs, spine, sternum, heart,
aorta, trachea and main bronchi, diaphragm and liver, two lungs (about -850 HU) with branching
vessels, and 0-4 nodules (3-30 mm, solid or part-solid with a ground-glass halo, some touching the
lung wall). Noise N(0, 20-40 HU). Malignancy rises with diameter and irregularity; mal_details are
simulated reader ratings 1-5 and mal_bool is True when their mean is above 3. candidates.csv: class 1
near each nodule (within 0.45 radii), class 0 mostly on vessels and the lung wall.{_style_note(config)}

Sizes: "full" = 512 x 512 slices, 0.55-0.88 mm pixels, 100-300 slices of 0.625-2.5 mm.
"small" = 128 x 128 slices over the same 280-350 mm field of view (2.2-2.7 mm pixels), 40-80
slices of 3-4.5 mm; there, nodules are at least 1.6 voxels wide (about 5-7 mm).
"medium" = 256 x 256 slices over the same field of view (1.1-1.4 mm pixels), 90-250 slices of 1.25-2.5 mm.

{_follow_up_note(config)}Directions: most series are identity like LUNA16. Non-identity ones: {kinds or "none"}.
"flipped" = two array axes reversed (direction has two -1 entries); "oblique" = rotated 4-12 degrees.
"""


def _style_note(config: SynthConfig) -> str:
    if config.style == "standard":
        return ""
    return (
        f"\nStyle {config.style} (ct_pipeline/synth/style.py) changes the above: HU calibration, noise, a soft or sharp"
        "\nkernel, spacings, vessel contrast and density, ground-glass nodules, nodules on the pleura and on vessels."
    )


def _follow_up_note(config: SynthConfig) -> str:
    if not config.follow_up:
        return ""
    return """Follow-ups (--follow-up): followup/<uid>.mhd is a later scan of each series (followup_pairs.csv pairs
them, with the interval in days and the rigid pose change: the patient turned about an axis through
the lungs' centre, then shifted). followup_truth.csv: each nodule's status (grown, stable, shrunk,
vanished, new), its centre and volume in both scans, and the volume change in percent.

"""
