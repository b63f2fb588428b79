"""Issue 26: messages that named the wrong cause now say what is wrong (exit 2, one line, nothing written)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from ct_pipeline.loading.mhd import write_mhd
from ct_pipeline.models import save_checkpoint
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import constant_classifier, phantom_chest, phantom_geometry, write_models
from tests.helpers.folder_digest import tree_digest

UID = "1.2.826.0.1.3680043.8.498.2620"


def _scan(tmp_path):
    path = tmp_path / f"{UID}.mhd"
    write_mhd(phantom_chest(), phantom_geometry(), path)
    return path


def _header_lines(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    "case, expected",
    [
        (
            "empty",
            "the MetaImage header is empty (0 bytes); expected Key = Value lines with DimSize, ElementType, ElementDataFile: re-download or re-write it",
        ),
        (
            "cut after a line",
            "the MetaImage header lacks DimSize, ElementType, ElementDataFile (truncated or incomplete); re-download or re-write it",
        ),
        ("cut mid-line", "the header ends mid-line at 'ElementTy' (truncated); re-download or re-write it"),
        (
            "data file is a folder",
            "ElementDataFile 'volumes' names a folder ({folder}), not a data file; fix the header to name the .raw file",
        ),
        (
            "data file name too long",
            "ElementDataFile '" + "v" * 80 + "' is not a usable file name (File name too long)",
        ),
    ],
)
def test_info_says_what_is_wrong_with_an_mhd_header(tmp_path, case, expected):
    scan = _scan(tmp_path)
    lines = _header_lines(scan)
    at = next(i for i, line in enumerate(lines) if line.startswith("DimSize"))
    if case == "empty":
        scan.write_text("")
    elif case == "cut after a line":
        scan.write_text("".join(lines[:at]))
    elif case == "cut mid-line":
        scan.write_text("".join(lines[: at + 1]) + "ElementTy")
    elif case == "data file name too long":
        scan.write_text("".join(lines).replace(f"ElementDataFile = {UID}.raw", "ElementDataFile = " + "v" * 5000))
    else:
        (tmp_path / "volumes").mkdir()
        scan.write_text("".join(lines).replace(f"ElementDataFile = {UID}.raw", "ElementDataFile = volumes"))
    before = tree_digest(tmp_path)
    result = run_ct("info", scan)
    assert result.exit_code == 2, result.output
    where = f"{scan}:{at + 2}" if case == "cut mid-line" else str(scan)
    assert error_line(result) == f"error: {where}: " + expected.format(folder=tmp_path / "volumes")
    assert tree_digest(tmp_path) == before


def test_info_says_a_three_component_nrrd_is_not_a_ct(tmp_path):
    image = sitk.Compose(*[sitk.GetImageFromArray(phantom_chest())] * 3)  # a vector image: 3 values per voxel
    path = tmp_path / "colour.nrrd"
    sitk.WriteImage(image, str(path))
    result = run_ct("info", path)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {path}: has 3 components per voxel (a vector or colour image); a CT needs 1, a number of HU per voxel"
    )


def _run_folder(folder, *names):
    folder.mkdir(parents=True)
    for name in names:
        save_checkpoint(folder / name, constant_classifier(0.9), kind="cls")
    return folder


@pytest.mark.parametrize("option", ["--seg-model", "--cls-model", "--mal-model"])
def test_diagnose_says_a_checkpoint_option_got_a_folder_and_which_file_to_pass(tmp_path, option):
    models = write_models(tmp_path / "models")
    run = _run_folder(tmp_path / "runs" / "cls", "best.ckpt", "last.ckpt")
    given = {"--seg-model": models["seg"], "--cls-model": models["cls"], option: run}
    args = [item for pair in given.items() for item in pair]
    scan = _scan(tmp_path)
    before = tree_digest(tmp_path)
    result = run_ct("diagnose", scan, *args)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {option} {run} is a folder, not a file; it holds best.ckpt and last.ckpt: pass {run / 'best.ckpt'}"
    )
    assert tree_digest(tmp_path) == before


def test_a_folder_without_checkpoints_is_named_as_a_folder(tmp_path):
    models = write_models(tmp_path / "models")
    empty = _run_folder(tmp_path / "runs" / "nothing")
    scan = _scan(tmp_path)
    result = run_ct("diagnose", scan, "--seg-model", empty, "--cls-model", models["cls"])
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: --seg-model {empty} is a folder, not a file; give a checkpoint file (a run's best.ckpt or last.ckpt)"
    )


def test_models_info_of_a_run_folder_suggests_its_checkpoint(tmp_path):
    run = _run_folder(tmp_path / "run", "last.ckpt")
    result = run_ct("models", "info", run)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: checkpoint {run} is a folder, not a file; it holds last.ckpt: pass {run / 'last.ckpt'}"
    )
