"""`ct synth --style site-b`: a second phantom family that differs where scanners and sites differ."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.synth import SynthConfig, generate_series
from ct_pipeline.synth.config import direction_kinds, plan_series
from ct_pipeline.synth.style import SITE_B


def _series(tmp_path, style: str, n: int = 12, seed: int = 3):
    config = SynthConfig(out_dir=tmp_path, n_series=n, seed=seed, size="small", style=style)
    return config, [
        generate_series(config, plan_series(config, i, *kind)) for i, kind in enumerate(direction_kinds(config))
    ]


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="--style"):
        SynthConfig(out_dir=tmp_path, n_series=1, style="site-z")


def test_site_b_changes_geometry_directions_noise_and_nodules(tmp_path):
    standard_config, standard = _series(tmp_path / "a", "standard")
    site_config, site = _series(tmp_path / "b", "site-b")
    assert standard_config.oblique_fraction == 0.1 and site_config.oblique_fraction == pytest.approx(1 / 3)
    assert sum(s.layout.oblique for s in site) == 4 and sum(any(s.layout.flips_irc) for s in site) == 4
    spacings = {s.layout.spacing_xyz[2] for s in site}
    assert spacings <= set(SITE_B.presets["small"]["slice_spacings_mm"]) and spacings & {5.0, 2.5}

    # noise: the SD of the air outside the body (a corner of every slice), before the HU clip bites
    def air_sd(series):
        return float(np.median([s.hu[:, :8, :8].astype(np.float64).std() for s in series]))

    assert air_sd(site) > 1.4 * air_sd(standard)
    kinds = Counter(n.kind for s in site for n in s.nodules)
    assert kinds["ground-glass"] >= 1 and kinds["part-solid"] >= 1
    assert "ground-glass" not in Counter(n.kind for s in standard for n in s.nodules)


def test_site_b_ground_glass_nodules_are_drawn_without_a_solid_core(tmp_path):
    _, site = _series(tmp_path, "site-b", n=20, seed=5)
    found = [(s, n) for s in site for n in s.nodules if n.kind == "ground-glass" and n.diameter_mm >= 8]
    assert found, "no ground-glass nodule of 8 mm or more in 20 series"
    series, nodule = found[0]
    irc = np.rint(
        series.layout.canonical_irc_to_stored_irc(series.layout.anatomy_mm_to_canonical_irc(np.array(nodule.center_mm)))
    ).astype(int)
    patch = series.hu[irc[0], irc[1] - 1 : irc[1] + 2, irc[2] - 1 : irc[2] + 2].astype(float)
    assert -800 < patch.mean() < -300  # ground glass, neither lung (-850) nor solid tissue (> -100)
