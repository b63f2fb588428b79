"""Inputs that must NOT stop a command (exit 0), and the exit codes of internal failures.

The bad inputs that stop a command with exit code 2 are in tests/cli/test_errors.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.catalog import open_catalog
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.mhd import write_mhd
from ct_pipeline.models import save_checkpoint
from ct_pipeline.prepcache import key_for
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import constant_classifier, phantom_chest, phantom_geometry, threshold_unet
from tests.helpers.tiny_luna import SERIES, coded_volume, geometry, write_tiny_luna

UID = "1.2.826.0.1.3680043.8.498.7"


def test_candidates_outside_the_volume_are_skipped_with_a_warning_and_counted(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    outside_xyz = geometry(0).irc_to_xyz((20, 32, 200))  # column 200 of 64: beyond the right edge
    far_xyz = geometry(1).irc_to_xyz((-50, 10, 10))  # 50 slices before the first
    with open(root / "candidates.csv", "a") as handle:
        handle.write(f"{SERIES[0]},{outside_xyz[0]},{outside_xyz[1]},{outside_xyz[2]},0\n")
        handle.write(f"{SERIES[1]},{far_xyz[0]},{far_xyz[1]},{far_xyz[2]},0\n")
    cache_dir = tmp_path / "cache"
    args = ["prepcache", "--data-root", str(root), "--cache-dir", str(cache_dir)]
    result = run_ct(*args)
    assert result.exit_code == 0, result.output
    assert f"series {SERIES[0]}: 1 of 4 candidates lie outside the volume and are skipped" in result.stderr
    assert f"series {SERIES[1]}: 1 of 5 candidates lie outside the volume and are skipped" in result.stderr
    assert "3 filled, 0 already cached, 2 candidates outside their volume skipped" in " ".join(result.stdout.split())
    # the series are cached all the same, with the crops of their other candidates exact
    catalog = open_catalog([root], cache_dir)
    cache = CropCache(cache_dir)
    try:
        for n, uid in enumerate(SERIES):
            region = cache.get(key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec()))
            assert region is not None, uid
            assert np.array_equal(region.crop((20, 32, 32), (4, 6, 6)), coded_volume(n)[18:22, 29:35, 29:35])
    finally:
        cache.close()
    again = run_ct(*args)
    assert again.exit_code == 0 and "0 filled, 3 already cached" in " ".join(again.stdout.split())


def test_scan_smaller_than_the_classifier_crop_is_padded_and_diagnosed(tmp_path):
    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(), kind="seg")
    save_checkpoint(tmp_path / "cls.ckpt", constant_classifier(0.7, crop_shape_irc=(32, 48, 48)), kind="cls")
    scan = tmp_path / f"{UID}.mhd"
    write_mhd(phantom_chest(shape_irc=(9, 30, 34), nodules_irc=((4, 14, 9),)), phantom_geometry(), scan)
    args = ["diagnose", str(scan), "--seg-model", str(tmp_path / "seg.ckpt"), "--cls-model", str(tmp_path / "cls.ckpt")]
    result = run_ct(*args, "--no-lung-mask", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["shape_irc"] == [9, 30, 34]
    assert [c["center_irc"] for c in record["candidates"]] == [[4, 14, 9]]  # 9 slices < 32, 30 rows < 48
    assert record["candidates"][0]["nodule_prob"] == pytest.approx(0.7, abs=4e-3)  # bf16 where the CPU has it


def test_scan_where_segmentation_finds_nothing_prints_zero_findings(tmp_path):
    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(level_hu=900.0), kind="seg")  # nothing is that bright
    save_checkpoint(tmp_path / "cls.ckpt", constant_classifier(0.9), kind="cls")
    scan = tmp_path / f"{UID}.mhd"
    write_mhd(phantom_chest(), phantom_geometry(), scan)
    csv_path = tmp_path / "findings.csv"
    args = ["diagnose", str(scan), "--seg-model", str(tmp_path / "seg.ckpt"), "--cls-model", str(tmp_path / "cls.ckpt")]
    result = run_ct(*args, "--csv", str(csv_path))
    assert result.exit_code == 0, result.output
    assert f"series {UID}: 0 finding(s) at nodule probability >= 0.5" in result.stdout
    assert csv_path.read_text().splitlines() == ["seriesuid,coordX,coordY,coordZ,probability"]


def _info_args(tmp_path):
    (tmp_path / "subset0").mkdir()
    identity = Geometry((0, 0, 0), (1, 1, 1), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_mhd(np.zeros((4, 5, 6), np.int16), identity, tmp_path / "subset0" / f"{UID}.mhd")
    return ["info", UID, "--data-root", str(tmp_path)]


def _failing_load(*args, **kwargs):
    raise ZeroDivisionError("float division by zero")


def test_internal_failure_exits_1_with_one_line_and_a_hint(tmp_path, monkeypatch):
    monkeypatch.setattr("ct_pipeline.loading.load_ct", _failing_load)
    result = run_ct(*_info_args(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "internal error: ZeroDivisionError: float division by zero (rerun with --debug for the traceback)"
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("how", ["--debug", "CT_DEBUG=1"])
def test_debug_lets_the_traceback_through(tmp_path, monkeypatch, how):
    monkeypatch.setattr("ct_pipeline.loading.load_ct", _failing_load)
    args = _info_args(tmp_path)
    if how == "--debug":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("CT_DEBUG", "1")
    result = run_ct(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, ZeroDivisionError)
    assert "internal error" not in result.stderr


def test_interrupt_exits_130(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ct_pipeline.loading.load_ct", interrupted)
    result = run_ct(*_info_args(tmp_path))
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"
