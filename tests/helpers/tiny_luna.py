"""A tiny LUNA16-layout folder whose voxel values encode their own index, for exact cache tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ct_pipeline.evaluation.tables import ANNOTATION_HEADER
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.mhd import write_mhd

SERIES = ["1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102", "1.2.826.0.1.3680043.8.498.103"]
SHAPE_IRC = (40, 64, 64)


def coded_volume(seed: int) -> np.ndarray:
    """HU that tell where they are: i*100 + r + c % 7 + seed, kept within int16."""
    i, r, c = np.indices(SHAPE_IRC)
    return (i * 50 + r * 3 + c % 7 + seed - 1000).astype(np.int16)


def geometry(n: int) -> Geometry:
    direction = (1, 0, 0, 0, 1, 0, 0, 0, 1) if n != 2 else (0, -1, 0, 1, 0, 0, 0, 0, 1)
    return Geometry((-50.0 + n, -60.0, -100.0 - n), (0.8, 0.8, 2.0), direction)


def write_tiny_luna(root: Path) -> Path:
    """3 series (the third with a rotated direction), 3-5 candidates each, and the CSVs."""
    (root / "subset0").mkdir(parents=True, exist_ok=True)
    candidates = ["seriesuid,coordX,coordY,coordZ,class"]
    annotations = [ANNOTATION_HEADER]
    malignancy = ["seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool"]
    for n, uid in enumerate(SERIES):
        geo = geometry(n)
        write_mhd(coded_volume(n), geo, root / "subset0" / f"{uid}.mhd")
        points_irc = [(20, 32, 32), (10, 20, 40), (30, 50, 12), (2, 3, 60)][: 3 + (n % 2)]
        for k, irc in enumerate(points_irc):
            x, y, z = geo.irc_to_xyz(irc)
            candidates.append(f"{uid},{x},{y},{z},{1 if k == 0 else 0}")
        x, y, z = geo.irc_to_xyz(points_irc[0])
        annotations.append(f"{uid},{x},{y},{z},6.0")
        malignancy.append(f"{uid},{x},{y},{z},6.0,{'True' if n == 1 else 'False'}")
    (root / "candidates.csv").write_text("\n".join(candidates) + "\n")
    (root / "annotations.csv").write_text("\n".join(annotations) + "\n")
    (root / "annotations_with_malignancy.csv").write_text("\n".join(malignancy) + "\n")
    return root
