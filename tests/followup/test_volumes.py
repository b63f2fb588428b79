"""A nodule measured in two scans at one HU level: the change is the nodule's, not the edge level's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding, NoduleMask
from ct_pipeline.diagnosis.volumetry import measure_mask, outline_nodule
from ct_pipeline.followup.comparison import compare_scans
from ct_pipeline.followup.registration import Registration
from ct_pipeline.followup.volumes import remeasure_pairs
from ct_pipeline.geometry import Geometry
from ct_pipeline.volume import CtVolume

GEOMETRY = Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
CENTER_IRC = (20, 32, 32)


def _scan(uid: str, blur_voxels: float, core_hu: float) -> CtVolume:
    """Lung at -850 HU with a 4 mm-radius ball of ``core_hu``, blurred like a softer kernel."""
    i, r, c = np.indices((40, 64, 64), dtype=float)
    distance_mm = np.sqrt(((i - 20) * 1.0) ** 2 + ((r - 32) * 0.7) ** 2 + ((c - 32) * 0.7) ** 2)
    hu = np.where(distance_mm <= 4.0, core_hu, -850.0)
    hu = ndimage.gaussian_filter(hu, blur_voxels)
    return CtVolume(np.rint(hu).astype(np.int16), GEOMETRY, uid, uid, "mhd")


def _diagnosed(volume: CtVolume) -> DiagnosisResult:
    component = volume.hu[10:30, 20:44, 20:44] > -700  # what a U-Net trained on -700 HU masks marks
    start, outline = outline_nodule(volume.hu, (10, 20, 20), component, (1.0, 0.7, 0.7), CENTER_IRC)
    measured = measure_mask(outline, start, (1.0, 0.7, 0.7), volume.hu)
    finding = Finding(tuple(GEOMETRY.irc_to_xyz(np.array(CENTER_IRC))), CENTER_IRC, 8.0, 0.95, measurement=measured)
    return DiagnosisResult(
        volume.series_uid, (finding,), nodule_masks=(NoduleMask(0, start, outline, (10, 20, 20), component),)
    )


def test_a_differently_blurred_part_solid_nodule_changes_less_at_one_level():
    # The same ball; the later scan smoother (a softer kernel) and its core measured lower.
    prior, current = _scan("1.2.1", 0.6, -300.0), _scan("1.2.2", 1.4, -300.0)
    results = _diagnosed(prior), _diagnosed(current)
    identity = Registration((1, 0, 0, 0, 1, 0, 0, 0, 1), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, 0.0, 1.0, 1.0, 0.0)
    own = compare_scans(*results, identity, threshold=0.5)
    paired = remeasure_pairs(own, (prior, results[0]), (current, results[1]))
    (own_pair,), (pair,) = own.pairs, paired.pairs
    assert own_pair.level_hu is None and pair.level_hu is not None
    assert abs(pair.volume_change_pct) < abs(own_pair.volume_change_pct) - 3.0, (
        own_pair.volume_change_pct,
        pair.volume_change_pct,
    )
    assert abs(pair.volume_change_pct) < 6.0  # own levels: +9.6 %
    assert pair.prior.measurement.volume_mm3 == pytest.approx(4 / 3 * np.pi * 4.0**3, rel=0.2)


def test_results_without_components_keep_their_recorded_volumes():
    prior, current = _scan("1.2.1", 0.6, 40.0), _scan("1.2.2", 0.6, 40.0)
    results = [_diagnosed(v) for v in (prior, current)]
    bare = [DiagnosisResult(r.series_uid, r.findings) for r in results]  # as read back from a result file
    identity = Registration((1, 0, 0, 0, 1, 0, 0, 0, 1), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, 0.0, 1.0, 1.0, 0.0)
    own = compare_scans(*bare, identity)
    assert remeasure_pairs(own, (prior, bare[0]), (current, bare[1])) == own
