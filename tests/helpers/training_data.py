"""A tiny LUNA16-layout folder that a model can learn from in seconds, for the training tests.

Series of 32x64x64 voxels: lung-like background (-800 HU with noise), a few bright spheres as
nodules (the bigger ones malignant), and non-nodule candidates in plain background. The three
CSVs are written like ``ct synth`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ct_pipeline.evaluation.tables import ANNOTATION_HEADER
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.mhd import write_mhd

SHAPE_IRC = (32, 64, 64)
SPACING_XYZ = (1.0, 1.0, 1.5)


def series_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{900 + n}"


def write_training_luna(
    root: Path, n_series: int = 6, nodules_per_series: int = 3, negatives_per_series: int = 8, seed: int = 0
) -> Path:
    """Write ``n_series`` series under ``root/subset0`` and the LUNA16 CSVs; return ``root``."""
    rng = np.random.default_rng(seed)
    (root / "subset0").mkdir(parents=True, exist_ok=True)
    candidates = ["seriesuid,coordX,coordY,coordZ,class"]
    annotations = [ANNOTATION_HEADER]
    malignancy = ["seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool"]
    i, r, c = np.indices(SHAPE_IRC)
    for n in range(n_series):
        uid = series_uid(n)
        geometry = Geometry((-32.0, -32.0, -20.0 - 3 * n), SPACING_XYZ, (1, 0, 0, 0, 1, 0, 0, 0, 1))
        hu = -800.0 + rng.normal(0.0, 30.0, SHAPE_IRC)
        for k in range(nodules_per_series):
            center = np.array([rng.integers(8, 24), rng.integers(12, 52), rng.integers(12, 52)])
            malignant = (n + k) % 2 == 1
            radius_mm = 5.0 if malignant else 2.5
            dist_mm = np.sqrt(
                ((i - center[0]) * SPACING_XYZ[2]) ** 2
                + ((r - center[1]) * SPACING_XYZ[1]) ** 2
                + ((c - center[2]) * SPACING_XYZ[0]) ** 2
            )
            hu[dist_mm <= radius_mm] = 40.0 + rng.normal(0.0, 20.0)
            x, y, z = geometry.irc_to_xyz(tuple(float(v) for v in center))
            candidates.append(f"{uid},{x},{y},{z},1")
            annotations.append(f"{uid},{x},{y},{z},{2 * radius_mm}")
            malignancy.append(f"{uid},{x},{y},{z},{2 * radius_mm},{malignant}")
        for _ in range(negatives_per_series):
            center = (float(rng.integers(4, 28)), float(rng.integers(8, 56)), float(rng.integers(8, 56)))
            x, y, z = geometry.irc_to_xyz(center)
            candidates.append(f"{uid},{x},{y},{z},0")
        write_mhd(np.clip(hu, -1000, 1000).astype(np.int16), geometry, root / "subset0" / f"{uid}.mhd")
    (root / "candidates.csv").write_text("\n".join(candidates) + "\n")
    (root / "annotations.csv").write_text("\n".join(annotations) + "\n")
    (root / "annotations_with_malignancy.csv").write_text("\n".join(malignancy) + "\n")
    return root
