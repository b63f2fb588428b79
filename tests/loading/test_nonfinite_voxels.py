"""Issue 26: NaN or infinite voxels are refused when a volume is loaded, by every loader and command."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import SimpleITK as sitk

from cli.output import print_json
from ct_pipeline.errors import BadDataError
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.loading_cases import write_raw_mhd

UID = "1.2.826.0.1.3680043.8.498.26"


def _spoiled_chest() -> np.ndarray:
    """The phantom chest as float32 HU with 3 NaN and 2 infinite voxels."""
    hu = phantom_chest().astype(np.float32)
    hu[3, 10, 10] = hu[8, 24, 18] = hu[20, 50, 50] = np.nan
    hu[5, 5, 5], hu[6, 6, 6] = np.inf, -np.inf
    return hu


@pytest.mark.parametrize("element_type, dtype", [("MET_FLOAT", np.float32), ("MET_DOUBLE", np.float64)])
def test_info_refuses_a_float_mhd_with_non_finite_voxels_and_prints_no_json(tmp_path, element_type, dtype):
    scan = write_raw_mhd(tmp_path / f"{UID}.mhd", _spoiled_chest().astype(dtype), element_type)
    before = tree_digest(tmp_path)
    result = run_ct("info", scan, "--json")
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {scan}: 5 of 98304 voxels are not finite (NaN or infinite); a CT holds a number of HU in every "
        "voxel: fix or re-export the image"
    )
    assert result.stdout == ""  # no JSON with NaN in it
    assert tree_digest(tmp_path) == before


def test_diagnose_fails_a_float_mhd_with_non_finite_voxels_and_writes_no_findings(tmp_path):
    models = write_models(tmp_path / "models")
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = write_raw_mhd(scans / f"{UID}.mhd", _spoiled_chest(), "MET_FLOAT")
    before = tree_digest(tmp_path)
    out = tmp_path / "out"
    result = run_ct("diagnose", scan, "--seg-model", models["seg"], "--cls-model", models["cls"], "--out", out)
    # The one series named is refused as bad input (exit 2, one error line), never "0 findings" with exit 0.
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1]
    assert errors[0].startswith(f"error: {scan}: 5 of 98304 voxels are not finite (NaN or infinite);")
    assert "series failed" not in result.stderr
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if out not in k.parents} == before
    # no result, no findings.csv: only the run's log and its lock
    assert sorted(k for k in after if out in k.parents) == [out / ".ct-run.lock", out / "logs" / "diagnose.log"]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_info_refuses_an_image_file_with_non_finite_voxels_instead_of_reading_them_as_0_hu(tmp_path, suffix):
    image = sitk.GetImageFromArray(_spoiled_chest())
    image.SetSpacing((0.8, 0.8, 2.0))
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    before = tree_digest(tmp_path)
    result = run_ct("info", path, "--json")
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {path}: 5 of 98304 voxels are not finite (NaN or infinite);")
    assert tree_digest(tmp_path) == before


def test_a_finite_float_mhd_still_loads_and_prints_strict_json(tmp_path):
    hu = phantom_chest().astype(np.float32)
    scan = write_raw_mhd(tmp_path / f"{UID}.mhd", hu, "MET_FLOAT")
    result = run_ct("info", scan, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert (record["hu_min"], record["hu_max"]) == (-1000.0, 60.0)


def test_check_finite_counts_every_non_finite_voxel_across_chunks(monkeypatch):
    from ct_pipeline.loading.limits import check_finite

    monkeypatch.setattr("ct_pipeline.loading.limits._CHUNK_VOXELS", 7)  # many slabs on a small array
    hu = np.zeros((5, 6, 7), np.float32)
    hu.flat[[0, 6, 7, 100, 209]] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    with pytest.raises(BadDataError, match=r"^x: 5 of 210 voxels are not finite"):
        check_finite(hu, "x")
    check_finite(np.full((2, 2, 2), 3e38, np.float32), "huge but finite")  # the sum overflows; no voxel does
    check_finite(np.zeros((2, 2, 2), np.int16), "integers")


def test_print_json_writes_null_for_nan_and_infinity_never_bare_nan():
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        print_json({"hu_min": float("nan"), "values": [1.5, float("inf"), (float("-inf"),)]})
    assert json.loads(buffer.getvalue(), parse_constant=lambda name: pytest.fail(name)) == {
        "hu_min": None,
        "values": [1.5, None, [None]],
    }
