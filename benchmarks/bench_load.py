"""Reading 512x512 LUNA16-format volumes: our loader vs numpy.fromfile of the same .raw (the floor)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.common import Figure, Section, best_time, drop_page_cache_hint
from ct_pipeline.loading import load_ct
from ct_pipeline.synth import SynthConfig, write_synthetic_dataset

N_SERIES = 3


def run() -> Section:
    with tempfile.TemporaryDirectory(prefix="ct-bench-load-") as tmp:
        out = Path(tmp) / "synth"
        write_synthetic_dataset(SynthConfig(n_series=N_SERIES, seed=7, size="full", out_dir=out))
        mhds = sorted(out.glob("subset0/*.mhd"))
        voxels = sum(int(np.prod(load_ct(p).shape_irc)) for p in mhds)

        def ours():
            for path in mhds:
                load_ct(path)

        def floor():
            for path in mhds:
                np.fromfile(path.with_suffix(".raw"), dtype="<i2")

        def simpleitk():
            for path in mhds:
                sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

        t_ours = best_time(ours, repeat=7)
        t_floor = best_time(floor, repeat=7)
        t_sitk = best_time(simpleitk, repeat=3)
    mb = voxels * 2 / 1e6
    return Section(
        key="load",
        title="Loading 512x512 CT volumes (.mhd/.raw)",
        command="make bench (python -m benchmarks.run load)",
        setup=f"{N_SERIES} `ct synth --size full` series ({mb:.0f} MB of int16 in all), each read whole; median of 7; "
        + drop_page_cache_hint(),
        expectation="within 1.1x of the floor: the loader parses the header, checks sizes and calls numpy.fromfile once",
        figures=[
            Figure(
                "load_ct per series",
                t_ours / N_SERIES * 1e3,
                "ms",
                t_floor / N_SERIES * 1e3,
                "numpy.fromfile of the .raw",
                t_floor / t_ours,
                "within 1.5x of the floor (ratio >= 0.67)",
                t_ours <= 1.5 * t_floor,
            ),
            Figure(
                "throughput",
                mb / t_ours,
                "MB/s",
                mb / t_sitk,
                "SimpleITK ReadImage + GetArrayFromImage",
                t_sitk / t_ours,
                "",
                None,
                "SimpleITK is shown for reference: it copies the buffer once more",
            ),
        ],
    )
