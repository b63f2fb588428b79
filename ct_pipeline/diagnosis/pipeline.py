"""``diagnose(volume, models, config)``: one CT in, its findings out, with the time of each stage.

Stages (keys of ``timings_s``):

1. ``lung_region`` -- where the U-Net must look (skipped with ``restrict_to_lungs=False``);
2. ``segmentation`` -- the U-Net over the slices, thresholded;
3. ``grouping`` -- erosion, 3D components, centres and diameters;
4. ``classification`` -- nodule probability of every candidate within the budget (the best
   ``max_candidates`` by the U-Net's output; the rest are not findings);
5. ``merge`` -- one finding per lesion;
6. ``malignancy`` -- for findings at or above the nodule threshold, when a model is given.

Merging comes after classification, not before as one might expect: merging first means
choosing each group's representative without probabilities (its largest piece), and on the real
test CT that swallowed two or three separate candidates of probability 0.55-0.71 into larger,
low-probability vessel pieces. Merging after keeps the book's findings exactly and drops only
the less probable duplicates.

Memory: with ``release_memory`` the U-Net's and the classifier's freed blocks go back to the
system between batches and the heaps are trimmed between stages (see ``runtime``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ct_pipeline.diagnosis.candidates import (
    Candidates,
    budget_order,
    component_around,
    confident_fraction,
    group_candidates,
    kept_of_groups,
    merge_groups,
)
from ct_pipeline.diagnosis.classify import CropSpacing, classify_crops
from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.diagnosis.features import CandidateFeatures, budget_ranks
from ct_pipeline.diagnosis.lungs import find_lung_region
from ct_pipeline.diagnosis.networks import DiagnosisModels
from ct_pipeline.diagnosis.progress import StageProgress, no_progress
from ct_pipeline.diagnosis.result import DiagnosisResult, Finding, NoduleMask
from ct_pipeline.diagnosis.runtime import release_free_heap, returning_freed_memory
from ct_pipeline.diagnosis.segment import region_pixel_fraction, segment_volume
from ct_pipeline.diagnosis.volumetry import measure_mask, outline_nodule
from ct_pipeline.errors import BadDataError, CtError
from ct_pipeline.threads import torch_threads
from ct_pipeline.volume import CtVolume

log = logging.getLogger(__name__)

CT_MODALITIES = ("CT",)
CLASSIFIER_MAPPED_BYTES = 8 << 20


@contextmanager
def _timed(timings: dict[str, float], stage: str, progress: StageProgress = no_progress) -> Iterator[None]:
    progress(stage, 0, 0)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start


def check_diagnosable(volume: CtVolume, context_slices: int = 0) -> None:
    """Refuse what is not a 3D CT in HU, or too thin for the U-Net.

    Args:
        context_slices: slices the U-Net reads on each side of the one it segments
            (:attr:`DiagnosisModels.context_slices`); a series needs ``2 * context_slices + 1``.

    Raises:
        BadDataError: another modality, an empty volume, or fewer slices than the U-Net's input.
    """
    modality = (volume.modality or "CT").upper()
    if modality not in CT_MODALITIES:
        raise BadDataError(
            f"series {volume.series_uid} has modality {volume.modality!r}; ct diagnose needs a CT series "
            "(pick the CT series of the study)"
        )
    if volume.hu.ndim != 3 or min(volume.hu.shape) < 1:
        raise BadDataError(f"series {volume.series_uid} has shape {volume.hu.shape}; a CT needs slices of pixels")
    # Below the U-Net's input every slice would be segmented mostly from padding, and a single
    # DICOM slice has no slice spacing at all: findings would be made up.
    needed = 2 * context_slices + 1
    if volume.hu.shape[0] < needed:
        raise BadDataError(
            f"series {volume.series_uid} has {volume.hu.shape[0]} slice(s), but the U-Net reads {needed} at a time "
            f"({context_slices} on each side of the one it segments); give a CT volume of at least {needed} slices, "
            "not a single image or a thin stack"
        )


def diagnose(
    volume: CtVolume,
    models: DiagnosisModels,
    config: DiagnosisConfig = DiagnosisConfig(),
    progress: StageProgress = no_progress,
) -> DiagnosisResult:
    """Segment, group, classify and merge: the findings of one CT.

    Args:
        volume: the CT (HU int16, (index, row, col)).
        models: networks from :func:`~ct_pipeline.diagnosis.networks.load_diagnosis_models`.
        config: thresholds, lung restriction, merging, batch sizes.
        progress: told of each stage and batch (see :mod:`~ct_pipeline.diagnosis.progress`).

    Returns:
        Every candidate (after merging), most probable first, and the time of each stage.
        An empty segmentation gives no findings (not an error).

    Raises:
        BadDataError: not a CT.
    """
    check_diagnosable(volume, models.context_slices)
    # Parallel batches each run on one thread (see InferenceOptions.workers).
    with torch_threads(1 if models.workers > 1 else None):
        return _diagnose(volume, models, config, progress)


def propose_candidates(
    volume: CtVolume,
    models: DiagnosisModels,
    config: DiagnosisConfig,
    timings: dict[str, float] | None = None,
    progress: StageProgress = no_progress,
) -> tuple[Candidates, tuple[int, int, int, int] | None]:
    """Stages 1-3: the U-Net's candidates of one CT (no classifier needed) and the lung region
    (row/col box) it looked in, or None for every slice; stage times go into ``timings``."""
    candidates, region, _ = _propose(volume, models, config, {} if timings is None else timings, progress)
    return candidates, region


def _propose(
    volume: CtVolume,
    models: DiagnosisModels,
    config: DiagnosisConfig,
    timings: dict[str, float],
    progress: StageProgress,
) -> tuple[Candidates, tuple[int, int, int, int] | None, np.ndarray]:
    """:func:`propose_candidates`, and the thresholded U-Net output (nonzero: in the mask)."""
    hu = volume.hu
    spacing_irc = tuple(float(v) for v in volume.spacing_xyz[::-1])
    region = None
    if config.restrict_to_lungs:
        with _timed(timings, "lung_region", progress):
            region = find_lung_region(hu, spacing_irc, config.lung_margin_mm, config.lung_hu_threshold)  # type: ignore[arg-type]
        if region is None:
            log.warning(
                "series %s: no air-filled lungs found below %g HU; segmenting every slice",
                volume.series_uid,
                config.lung_hu_threshold,
            )
    # The budget ranks by the confident fraction too, so it is computed for either.
    scoring = config.confidence_weight > 0 or config.max_candidates > 0
    with _timed(timings, "segmentation", progress), returning_freed_memory(models.release_memory):
        level = segment_volume(
            hu,
            models.seg,
            context_slices=models.context_slices,
            threshold=config.seg_threshold,
            hu_range=config.hu_range,
            region=region,
            batch_size=config.seg_batch_size,
            workers=models.workers,
            confident_threshold=config.confident_threshold if scoring else None,
            on_batch=lambda done, total: progress("segmentation", done, total),
        )
        release_free_heap(models.release_memory)
    with _timed(timings, "grouping", progress):
        mask = level > 0 if scoring else level
        candidates = group_candidates(
            mask,
            hu,
            volume.geometry,
            config.erosion_iterations,
            config.hu_range,
            config.keep_eroded_away,
            config.min_candidate_diameter_mm,
        )
        del mask
        if scoring:
            candidates = dataclasses.replace(
                candidates, confident_fraction=confident_fraction(level, candidates.center_irc)
            )
        release_free_heap(models.release_memory)
    return candidates, region, level


def detection_score(
    nodule_prob: np.ndarray,
    confident: np.ndarray | None,
    weight: float,
    diameter_mm: np.ndarray | None = None,
    smallest_nodule_mm: float = 0.0,
) -> np.ndarray:
    """The ranking score of each candidate: ``nodule_prob * (1 - weight + weight * confident)``,
    times ``min(1, diameter_mm / smallest_nodule_mm)`` when that is > 0 (``nodule_prob`` itself,
    the same array, without a confident fraction or with weight 0 and no size term)."""
    score = nodule_prob
    if confident is not None and weight > 0:
        score = nodule_prob * (1.0 - weight + weight * confident)
    if diameter_mm is not None and smallest_nodule_mm > 0:
        score = score * np.minimum(1.0, np.asarray(diameter_mm, dtype=np.float64) / smallest_nodule_mm)
    return score


def _diagnose(
    volume: CtVolume, models: DiagnosisModels, config: DiagnosisConfig, progress: StageProgress
) -> DiagnosisResult:
    if models.cls is None:
        raise CtError("diagnose needs a nodule classifier (--cls-model)")
    hu = volume.hu
    timings: dict[str, float] = {}
    candidates, region, level = _propose(volume, models, config, timings, progress)
    n_not_classified = 0
    order = budget_order(candidates)
    rank = budget_ranks(order)
    if 0 < config.max_candidates < len(candidates):
        n_not_classified = len(candidates) - config.max_candidates
        # Index order, not rank order: the classifier's batches and the merge's ties stay as without a budget.
        chosen = np.sort(order[: config.max_candidates])
        candidates, rank = candidates.take(chosen), rank[chosen]
    crop_centers = candidates.crop_center_irc
    spacing = CropSpacing(tuple(float(v) for v in volume.spacing_xyz[::-1]), models.crop_spacing_mm)  # type: ignore[arg-type]
    # Native crops centre on the rounded voxel (the book's); resampled ones on the candidate itself.
    classified_centers = crop_centers if spacing.crop_mm is None else candidates.center_irc
    # Two workers' batches interleave in the heap, which then grew ~3x their live size; only
    # the largest maps (the first block's, ~2.4 MB per crop) go back to the system.
    with (
        _timed(timings, "classification", progress),
        returning_freed_memory(models.release_memory, CLASSIFIER_MAPPED_BYTES),
    ):
        nodule_prob = classify_crops(
            hu,
            classified_centers,
            models.cls,
            models.crop_shape_irc,
            hu_range=config.hu_range,
            batch_size=config.cls_batch_size,
            workers=models.workers,
            flips=config.classifier_flips,
            on_batch=lambda done, total: progress("classification", done, total),
            spacing=spacing,
        )
    score = detection_score(
        nodule_prob,
        candidates.confident_fraction,
        config.confidence_weight,
        candidates.diameter_mm,
        config.smallest_nodule_mm,
    )
    with _timed(timings, "merge", progress):
        owner = merge_groups(candidates.center_xyz, candidates.diameter_mm, score, config.merge_fraction)
        kept, group_sizes = kept_of_groups(owner, score)
    malignancy: dict[int, float] = {}
    if models.mal is not None:
        with _timed(timings, "malignancy", progress):
            nodules = np.array([i for i in kept if nodule_prob[i] >= config.nodule_threshold], dtype=np.int64)
            values = classify_crops(
                hu,
                classified_centers[nodules] if len(nodules) else np.zeros((0, 3)),
                models.mal,
                models.crop_shape_irc,
                hu_range=config.hu_range,
                batch_size=config.cls_batch_size,
                workers=models.workers,
                flips=config.classifier_flips,
                on_batch=lambda done, total: progress("malignancy", done, total),
                spacing=spacing,
            )
            malignancy = {int(i): float(v) for i, v in zip(nodules, values)}
    spacing_irc = tuple(float(v) for v in volume.spacing_xyz[::-1])
    nodule_masks = _nodule_masks(
        level, hu, candidates.diameter_mm, crop_centers, kept, nodule_prob >= config.nodule_threshold, spacing_irc
    )
    del level
    measurements = {m.finding: measure_mask(m.mask, m.start_irc, spacing_irc, hu) for m in nodule_masks}  # type: ignore[arg-type]
    findings = tuple(
        Finding(
            center_xyz=tuple(float(v) for v in candidates.center_xyz[i]),  # type: ignore[arg-type]
            center_irc=tuple(int(v) for v in crop_centers[i]),  # type: ignore[arg-type]
            diameter_mm=float(candidates.diameter_mm[i]),
            nodule_prob=float(nodule_prob[i]),
            detection_score=None if score[i] == nodule_prob[i] else float(score[i]),
            malignancy_prob=malignancy.get(int(i)),
            n_merged=int(size),
            measurement=measurements.get(position),
        )
        for position, (i, size) in enumerate(zip(kept, group_sizes))
    )
    position = np.empty(len(candidates), dtype=np.int64)
    position[kept] = np.arange(len(kept))
    classified = CandidateFeatures(
        center_xyz=candidates.center_xyz,
        crop_center_irc=crop_centers,
        diameter_mm=candidates.diameter_mm,
        n_voxels=candidates.n_voxels,
        confident_fraction=candidates.confident_fraction,
        budget_rank=rank,
        nodule_prob=nodule_prob,
        detection_score=score,
        finding=position[owner],
    )
    return DiagnosisResult(
        series_uid=volume.series_uid,
        findings=findings,
        timings_s=timings,
        n_candidates_before_merge=len(candidates),
        n_not_classified=n_not_classified,
        shape_irc=volume.shape_irc,
        spacing_xyz=tuple(float(v) for v in volume.spacing_xyz),  # type: ignore[arg-type]
        source=volume.source,
        region_fraction=region_pixel_fraction(volume.shape_irc, region, config.seg_batch_size),
        nodule_masks=nodule_masks,
        classified=classified,
    )


def _nodule_masks(level, hu, diameter_mm, crop_centers, kept, is_nodule, spacing_irc) -> tuple[NoduleMask, ...]:
    """The outline (:func:`~ct_pipeline.diagnosis.volumetry.outline_nodule`) of each kept candidate
    that is a nodule (positions in ``kept``), found from its crop voxel."""
    masks = []
    for position, i in enumerate(kept):
        if not is_nodule[i]:
            continue
        reach = np.ceil((diameter_mm[i] + 10.0) / np.asarray(spacing_irc)).astype(np.int64)
        voxel = tuple(int(v) for v in crop_centers[i])
        found = component_around(level, np.asarray(voxel), reach)
        if found is not None:
            masks.append(NoduleMask(position, *outline_nodule(hu, *found, spacing_irc, voxel), *found))
    return tuple(masks)
