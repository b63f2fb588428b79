"""Both scans of a paired nodule outlined at one HU level, so that their volume change is the nodule's.

Each scan's outline is cut half-way between its nodule's HU and its lung's
(:func:`~ct_pipeline.diagnosis.volumetry.edge_level_hu`). On a shallow edge -- a part-solid or
ground-glass nodule, or a scan smoothed by another kernel or by resampling -- a few tens of HU
between the two scans' levels move the edge by a voxel, tens of percent of a small nodule's
volume, which would read as growth. So each pair is outlined again, in both scans, at the mean
of its two levels, from the same U-Net components. On the real CT against a re-posed copy of
itself this took the two sub-solid nodules' changes from +18.6 % and -16.4 % to +6.8 % and
-11.4 %. Needs the components, which only a diagnosis in this process has; pairs read from
result files keep their recorded volumes (``level_hu`` null in the JSON).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding, NoduleMask
from ct_pipeline.diagnosis.volumetry import MaskMeasurement, edge_level_hu, measure_mask, outline_nodule
from ct_pipeline.followup.comparison import Comparison
from ct_pipeline.followup.matching import NodulePair, doubling_time_days, volume_change_pct
from ct_pipeline.volume import CtVolume


def _component_of(result: DiagnosisResult, finding: Finding) -> NoduleMask | None:
    index = next((i for i, f in enumerate(result.findings) if f is finding), None)
    return next((m for m in result.nodule_masks if m.finding == index and m.component is not None), None)


def _measured_at(volume: CtVolume, finding: Finding, mask: NoduleMask, level_hu: float) -> MaskMeasurement:
    spacing_irc = tuple(float(v) for v in volume.spacing_xyz[::-1])
    start, outline = outline_nodule(
        volume.hu, mask.component_start_irc, mask.component, spacing_irc, finding.center_irc, level_hu
    )  # type: ignore[arg-type]
    return measure_mask(outline, start, spacing_irc, volume.hu)  # type: ignore[arg-type]


def _remeasured(pair: NodulePair, scans, interval_days: float | None) -> NodulePair:
    (prior_volume, prior_result), (current_volume, current_result) = scans
    masks = _component_of(prior_result, pair.prior), _component_of(current_result, pair.current)
    if masks[0] is None or masks[1] is None:
        return pair
    levels = [
        edge_level_hu(v.hu, m.component_start_irc, m.component) for v, m in zip((prior_volume, current_volume), masks)
    ]  # type: ignore[arg-type]
    if levels[0] is None or levels[1] is None:
        return pair
    level = float(np.mean(levels))
    prior = dataclasses.replace(pair.prior, measurement=_measured_at(prior_volume, pair.prior, masks[0], level))
    current = dataclasses.replace(pair.current, measurement=_measured_at(current_volume, pair.current, masks[1], level))
    v1, v2 = prior.measurement.volume_mm3, current.measurement.volume_mm3  # type: ignore[union-attr]
    return dataclasses.replace(
        pair,
        prior=prior,
        current=current,
        level_hu=level,
        volume_change_pct=volume_change_pct(v1, v2),
        doubling_time_days=doubling_time_days(v1, v2, interval_days),
    )


def remeasure_pairs(
    comparison: Comparison, prior: tuple[CtVolume, DiagnosisResult], current: tuple[CtVolume, DiagnosisResult]
) -> Comparison:
    """``comparison`` with each pair's volumes measured at one level in both scans, where both
    results carry their U-Net components (``DiagnosisResult.nodule_masks``)."""
    pairs = tuple(_remeasured(p, (prior, current), comparison.interval_days) for p in comparison.pairs)
    return dataclasses.replace(comparison, pairs=pairs)
