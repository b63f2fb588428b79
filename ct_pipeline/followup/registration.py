"""CURRENT registered to PRIOR on the lungs, with SimpleITK's registration framework.

Both scans are averaged down to about ``working_spacing_mm`` voxels (the lungs' shape, not their
noise, is what aligns them), started from their lung centroids, then registered rigidly and,
from the rigid answer, affinely (breathing depth scales the lungs), by Mattes mutual information
over PRIOR's lungs dilated by ``lung_margin_mm`` (wall, mediastinum edges) -- so that the table,
arms and bowel gas, which move on their own, do not pull. The overlap of the lungs' air before
and after tells the user whether to trust it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ct_pipeline.diagnosis.lungs import find_lung_region
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.geometry import Geometry, image_on_grid
from ct_pipeline.volume import CtVolume

AIR_HU = -400.0


@dataclass(frozen=True)
class RegistrationConfig:
    """How the two scans are registered.

    Attributes:
        working_spacing_mm: both are averaged down to voxels of about this size first.
        lung_margin_mm: the metric looks at PRIOR's lungs dilated by this much.
        rigid_iterations / affine_iterations: per resolution level.
        sampling_fraction: share of the masked voxels the metric samples (a fixed seed: the
            same scans give the same answer).
    """

    working_spacing_mm: float = 2.0
    lung_margin_mm: float = 10.0
    rigid_iterations: int = 200
    affine_iterations: int = 100
    sampling_fraction: float = 0.25


@dataclass(frozen=True)
class Registration:
    """Where PRIOR's patient points are in CURRENT: ``current = matrix @ (prior - center) + center + translation`` (mm).

    Attributes:
        matrix: the affine's 3x3 part, row-major.
        translation_xyz / center_xyz: mm.
        rigid_angle_deg / rigid_translation_mm: the rigid stage's rotation and shift, for display.
        lung_overlap_before / lung_overlap_after: Dice of the lungs' air (HU < -400) over PRIOR's
            lungs, with the scans as they lie and after registration; near 1 is good.
        seconds: time taken.
    """

    matrix: tuple[float, ...]
    translation_xyz: tuple[float, float, float]
    center_xyz: tuple[float, float, float]
    rigid_angle_deg: float
    rigid_translation_mm: float
    lung_overlap_before: float
    lung_overlap_after: float
    seconds: float

    def prior_to_current(self, points_xyz: np.ndarray) -> np.ndarray:
        """PRIOR patient points (..., 3) -> CURRENT patient points (..., 3)."""
        center = np.asarray(self.center_xyz)
        shifted = np.asarray(points_xyz, dtype=np.float64) - center
        return shifted @ np.asarray(self.matrix).reshape(3, 3).T + center + np.asarray(self.translation_xyz)

    def current_to_prior(self, points_xyz: np.ndarray) -> np.ndarray:
        """CURRENT patient points (..., 3) -> PRIOR patient points (..., 3)."""
        center = np.asarray(self.center_xyz)
        shifted = np.asarray(points_xyz, dtype=np.float64) - center - np.asarray(self.translation_xyz)
        return (
            np.linalg.solve(np.asarray(self.matrix).reshape(3, 3), shifted.reshape(-1, 3).T).T.reshape(shifted.shape)
            + center
        )

    def to_dict(self) -> dict:
        return {
            "matrix": [round(float(v), 6) for v in self.matrix],
            "translation_xyz": [round(float(v), 3) for v in self.translation_xyz],
            "center_xyz": [round(float(v), 3) for v in self.center_xyz],
            "rigid_angle_deg": round(float(self.rigid_angle_deg), 3),
            "rigid_translation_mm": round(float(self.rigid_translation_mm), 3),
            "lung_overlap_before": round(float(self.lung_overlap_before), 4),
            "lung_overlap_after": round(float(self.lung_overlap_after), 4),
            "seconds": round(float(self.seconds), 3),
        }


def _working_image(volume: CtVolume, spacing_mm: float):
    """HU as float32, averaged over blocks of about ``spacing_mm`` (SimpleITK keeps the geometry right)."""
    import SimpleITK as sitk

    image = image_on_grid(volume.hu.astype(np.float32, copy=False), volume.geometry)
    factors = [max(1, int(round(spacing_mm / s))) for s in volume.spacing_xyz]
    return sitk.BinShrink(image, factors)


def _geometry_of(image) -> Geometry:
    return Geometry(tuple(image.GetOrigin()), tuple(image.GetSpacing()), tuple(image.GetDirection()))  # type: ignore[arg-type]


def _lungs(image, margin_mm: float, which: str):
    """(lung mask with ``margin_mm`` as a SimpleITK uint8 image on ``image``'s grid, lung air centroid xyz)."""
    import SimpleITK as sitk

    hu = sitk.GetArrayViewFromImage(image)
    spacing_irc = tuple(image.GetSpacing()[::-1])
    region = find_lung_region(hu, spacing_irc, margin_mm=margin_mm, air_hu=AIR_HU)  # type: ignore[arg-type]
    if region is None:
        raise BadInputError(f"{which}: no lungs found (no enclosed air below {AIR_HU:g} HU); is it a chest CT?")
    n_index, n_rows, n_cols = hu.shape
    mask = region.full_mask(slice(None), slice(0, n_rows), slice(0, n_cols))
    air = mask & (hu < AIR_HU)
    centroid_irc = np.argwhere(air).mean(axis=0)
    centroid_xyz = _geometry_of(image).irc_to_xyz(centroid_irc)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)
    return mask_image, centroid_xyz


def _lung_overlap(fixed, moving, mask, transform) -> float:
    """Dice of the air below -400 HU of both scans, within ``mask``, with ``moving`` seen through ``transform``."""
    import SimpleITK as sitk

    seen = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    fixed_air = (sitk.GetArrayViewFromImage(fixed) < AIR_HU) & inside
    moving_air = (sitk.GetArrayViewFromImage(seen) < AIR_HU) & inside
    total = int(fixed_air.sum()) + int(moving_air.sum())
    return 2.0 * int((fixed_air & moving_air).sum()) / total if total else 0.0


def _method(mask, iterations: int, levels: tuple[int, ...], config: RegistrationConfig, threads: int | None):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(config.sampling_fraction, 20251202)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(levels))
    method.SetSmoothingSigmasPerLevel([float(level) * config.working_spacing_mm / 2.0 for level in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if threads is not None:
        method.SetNumberOfThreads(int(threads))
    # One work unit for the metric: with several (2 or 4 tried; the seed fixed either way) ITK's
    # Mattes metric differs in the last bits from run to run -- its threads' shares of the joint
    # histogram meet in the order they run -- and the optimiser grows that into another answer
    # (#26: lung overlap 0.355/0.369/0.379 in three runs of one pair). The pyramid's filters and
    # the resampling stay threaded; no time lost measurably (2 threads: the real CT against a
    # re-posed copy 13.5 and 7.9 s, against 15.2 and 11.1 s with the metric threaded).
    method.SetNumberOfWorkUnits(1)
    return method


def _found(transform):
    """The optimised transform itself (SimpleITK may hand back a composite of one)."""
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    return transform.Downcast()


def register_scans(
    prior: CtVolume, current: CtVolume, config: RegistrationConfig = RegistrationConfig(), threads: int | None = None
) -> Registration:
    """Register ``current`` to ``prior`` on the lungs.

    Raises:
        BadInputError: no lungs found in one of the scans.
        BadDataError: SimpleITK's registration failed (scans that do not overlap).
    """
    import SimpleITK as sitk

    started = time.perf_counter()
    fixed = sitk.Clamp(_working_image(prior, config.working_spacing_mm), sitk.sitkFloat32, -1024.0, 600.0)
    moving = sitk.Clamp(_working_image(current, config.working_spacing_mm), sitk.sitkFloat32, -1024.0, 600.0)
    mask, prior_centroid = _lungs(fixed, config.lung_margin_mm, "PRIOR")
    _, current_centroid = _lungs(moving, config.lung_margin_mm, "CURRENT")

    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(float(v) for v in prior_centroid))
    rigid.SetTranslation(tuple(float(v) for v in current_centroid - prior_centroid))
    rigid = _execute(_method(mask, config.rigid_iterations, (4, 2, 1), config, threads), fixed, moving, rigid)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine = _execute(_method(mask, config.affine_iterations, (2, 1), config, threads), fixed, moving, affine)

    rotation = np.asarray(rigid.GetMatrix()).reshape(3, 3)
    angle_deg = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
    return Registration(
        matrix=tuple(float(v) for v in affine.GetMatrix()),
        translation_xyz=tuple(float(v) for v in affine.GetTranslation()),  # type: ignore[arg-type]
        center_xyz=tuple(float(v) for v in affine.GetCenter()),  # type: ignore[arg-type]
        rigid_angle_deg=angle_deg,
        rigid_translation_mm=float(np.linalg.norm(rigid.GetTranslation())),
        lung_overlap_before=_lung_overlap(fixed, moving, mask, sitk.Transform(3, sitk.sitkIdentity)),
        lung_overlap_after=_lung_overlap(fixed, moving, mask, affine),
        seconds=time.perf_counter() - started,
    )


def _execute(method, fixed, moving, initial):
    method.SetInitialTransform(initial, inPlace=False)
    try:
        return _found(method.Execute(fixed, moving))
    except RuntimeError as err:  # ITK's own text, e.g. "All samples map outside moving image buffer"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise BadDataError(
            f"registering CURRENT to PRIOR failed ({reason}); are both scans of the same patient's chest?"
        ) from err
