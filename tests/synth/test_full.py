"""The default (full) size: 512 x 512 slices, hundreds of candidates, nodules where the tables say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ct_pipeline.loading.mhd import load_mhd
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset


@pytest.mark.slow
def test_one_full_size_series(tmp_path):
    config = SynthConfig(out_dir=tmp_path / "data", n_series=1, seed=2, oblique_fraction=1.0)
    result = write_synthetic_dataset(config)
    (summary,) = result.series
    assert summary.direction_kind == "oblique"
    volume = load_mhd(tmp_path / "data" / "subset0" / f"{summary.series_uid}.mhd")
    n_slices, rows, cols = volume.hu.shape
    assert (rows, cols) == (512, 512) and 100 <= n_slices <= 300
    assert 0.5 <= volume.spacing_xyz[0] <= 0.9 and 0.6 <= volume.spacing_xyz[2] <= 2.5
    candidates = pd.read_csv(tmp_path / "data" / "candidates.csv")
    assert 300 <= int((candidates["class"] == 0).sum()) <= 900
    annotations = pd.read_csv(tmp_path / "data" / "annotations.csv")
    assert len(annotations) == summary.n_nodules >= 1
    irc = np.rint(volume.geometry.xyz_to_irc(annotations[["coordX", "coordY", "coordZ"]].to_numpy())).astype(int)
    assert np.all(volume.hu[irc[:, 0], irc[:, 1], irc[:, 2]] > -700)
    lungish = volume.hu[(volume.hu > -950) & (volume.hu < -700)]
    assert lungish.size > 0.03 * volume.hu.size
