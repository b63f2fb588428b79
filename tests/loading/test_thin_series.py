"""Issue 26: a series with fewer slices than the U-Net's input is refused, whatever its format."""

from __future__ import annotations

import json

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.loading.mhd import write_mhd
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.folder_digest import tree_digest

UID = "1.2.826.0.1.3680043.8.498.2601"


def _single_slice_dicom(folder):
    write_dicom_series(phantom_chest()[8:9], phantom_geometry(), folder, UID)  # the slice through a nodule
    return folder


def _needs_seven(n_slices: int) -> str:
    return (
        f"series {UID} has {n_slices} slice(s), but the U-Net reads 7 at a time (3 on each side of the one it "
        "segments); give a CT volume of at least 7 slices, not a single image or a thin stack"
    )


def test_diagnose_refuses_a_single_slice_dicom_series_instead_of_inventing_a_spacing(tmp_path):
    models = write_models(tmp_path / "models")
    scan = _single_slice_dicom(tmp_path / "scan")
    before = tree_digest(tmp_path / "models", scan)
    csv_path = tmp_path / "findings.csv"
    result = run_ct("diagnose", scan, "--seg-model", models["seg"], "--cls-model", models["cls"], "--csv", csv_path)
    # the one series named is refused as bad input: one error line, exit 2 (in a batch it is a failed series)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == f"error: {_needs_seven(1)}"
    assert "series failed" not in result.stderr
    assert "finding(s)" not in result.stdout
    assert tree_digest(tmp_path / "models", scan) == before
    assert csv_path.read_text().splitlines() == ["seriesuid,coordX,coordY,coordZ,probability"]  # no finding


@pytest.mark.parametrize("n_slices, exit_code", [(6, 2), (7, 0)])
def test_diagnose_needs_as_many_mhd_slices_as_the_unet_reads(tmp_path, n_slices, exit_code):
    models = write_models(tmp_path / "models")
    scan = tmp_path / f"{UID}.mhd"
    write_mhd(phantom_chest()[5 : 5 + n_slices], phantom_geometry(), scan)
    result = run_ct("diagnose", scan, "--seg-model", models["seg"], "--cls-model", models["cls"], "--no-lung-mask")
    assert result.exit_code == exit_code, result.output
    assert (_needs_seven(n_slices) in " ".join(result.stderr.split())) == (n_slices < 7)


def test_compare_refuses_a_thin_scan_with_exit_2(tmp_path):
    models = write_models(tmp_path / "models")
    prior = tmp_path / f"{UID}.mhd"
    write_mhd(phantom_chest()[:3], phantom_geometry(), prior)
    current = tmp_path / "1.2.826.0.1.3680043.8.498.2602.mhd"
    write_mhd(phantom_chest(), phantom_geometry(), current)
    before = tree_digest(tmp_path)
    result = run_ct("compare", prior, current, "--seg-model", models["seg"], "--cls-model", models["cls"])
    assert result.exit_code == 2, result.output
    assert error_line(result) == f"error: {_needs_seven(3)}"
    assert tree_digest(tmp_path) == before


def test_info_still_describes_a_single_slice_series_and_says_its_spacing_is_unknown(tmp_path):
    scan = _single_slice_dicom(tmp_path / "scan")
    result = run_ct("info", scan, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["shape_irc"] == [1, 64, 64]
    assert record["meta"]["slice_spacing"] == "unknown (a single slice; 1 mm is a placeholder)"
