"""Every bad input ends with exit code 2 and one line that says what is wrong (no traceback).

Each case of issue 10's list that a user meets through a command is here (docs: hardening map).
"""

import os
import pickle
import re

import numpy as np
import pytest
import torch

from cli.main import app
from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.mhd import write_mhd
from ct_pipeline.models import save_checkpoint
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import constant_classifier, write_models
from tests.helpers.hardening_files import write_non_image_dicom
from tests.helpers.tiny_luna import SERIES, write_tiny_luna

UID = "1.2.826.0.1.3680043.8.498.7"
UID2 = "1.2.826.0.1.3680043.8.498.8"
IDENTITY = Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
ROTATED = Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 2.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))


def _luna_root(tmp_path):
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    write_mhd(np.zeros((4, 5, 6), np.int16), IDENTITY, root / "subset0" / f"{UID}.mhd")
    return root


def _edit_mhd(tmp_path, old, new):
    root = _luna_root(tmp_path)
    header = root / "subset0" / f"{UID}.mhd"
    header.write_text(header.read_text().replace(old, new))
    return ["info", UID, "--data-root", str(root)]


def _dicom(folder, uid=UID, geometry=IDENTITY, **kwargs):
    hu = np.arange(6 * 4 * 4, dtype=np.int16).reshape(6, 4, 4)
    return write_dicom_series(hu, geometry, folder, uid, **kwargs)


def _tiny_luna_with(tmp_path, csv_name, extra_row):
    root = write_tiny_luna(tmp_path / "luna")
    with open(root / csv_name, "a") as handle:
        handle.write(extra_row + "\n")
    return ["prepcache", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache")]


class _RunsShell:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _scan(tmp_path):
    """A tiny LUNA16-style .mhd for the diagnose cases (never read: the models fail first)."""
    path = tmp_path / f"{UID}.mhd"
    write_mhd(np.zeros((4, 5, 6), np.int16), IDENTITY, path)
    return path


def _case(tmp_path, name):
    """Build the input for one case; return the `ct` arguments."""
    if name == "unknown series":
        return ["info", "1.2.3.4.5", "--data-root", str(_luna_root(tmp_path))]
    if name == "uid with slash":
        return ["info", "1.2/../3", "--data-root", str(_luna_root(tmp_path))]
    if name == "uid with dotdot":
        return ["info", "../1.2.3", "--data-root", str(_luna_root(tmp_path))]
    if name == "uid too long":
        return ["info", "1." + "2" * 70, "--data-root", str(_luna_root(tmp_path))]
    if name == "uid with dotdot to prepcache --series":
        root = write_tiny_luna(tmp_path / "luna")
        return ["prepcache", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"), "--series", "../1.2"]
    if name == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["info", str(tmp_path / "empty")]
    if name == "truncated raw":
        root = _luna_root(tmp_path)
        raw = root / "subset0" / f"{UID}.raw"
        raw.write_bytes(raw.read_bytes()[:100])
        return ["info", UID, "--data-root", str(root)]
    if name == "mhd element type disagrees with raw":
        return _edit_mhd(tmp_path, "MET_SHORT", "MET_FLOAT")
    if name == "mhd size disagrees with raw":
        return _edit_mhd(tmp_path, "DimSize = 6 5 4", "DimSize = 6 5 3")
    if name == "non-CT DICOM":
        write_dicom_series(np.zeros((3, 4, 4), np.int16), IDENTITY, tmp_path / "mr", UID, modality="MR")
        return ["info", str(tmp_path / "mr")]
    if name == "SR without pixel data":
        write_non_image_dicom(tmp_path / "sr" / "report.dcm", UID, "SR", referenced_series_uid=UID2)
        return ["info", str(tmp_path / "sr")]
    if name == "SEG without pixel data, implicit VR":
        write_non_image_dicom(tmp_path / "seg" / "seg.dcm", UID, "SEG", referenced_series_uid=UID2, explicit=False)
        return ["info", str(tmp_path / "seg")]
    if name == "missing slice":
        _dicom(tmp_path / "gap", slice_indices=[0, 1, 2, 4, 5])
        return ["info", str(tmp_path / "gap")]
    if name == "uneven spacing":
        _dicom(tmp_path / "uneven", slice_indices=[0, 1, 2])
        shifted = Geometry((0.0, 0.0, 0.7), IDENTITY.spacing_xyz, IDENTITY.direction)  # slices 3.. moved 0.7 mm
        _dicom(tmp_path / "uneven", geometry=shifted, slice_indices=[3, 4, 5], file_name_pattern="x{:06d}.dcm")
        return ["info", str(tmp_path / "uneven")]
    if name == "two series in one folder":
        _dicom(tmp_path / "mixed", slice_indices=[0, 1, 2])
        _dicom(tmp_path / "mixed", uid=UID2, slice_indices=[0, 1, 2], file_name_pattern="b{:06d}.dcm")
        return ["info", str(tmp_path / "mixed")]
    if name == "mixed slice orientations":
        _dicom(tmp_path / "orient", slice_indices=[0, 1, 2])
        _dicom(tmp_path / "orient", geometry=ROTATED, slice_indices=[3, 4, 5], file_name_pattern="o{:06d}.dcm")
        return ["info", str(tmp_path / "orient")]
    if name == "corrupt DICOM file":
        files = _dicom(tmp_path / "corrupt")
        files[3].write_bytes(files[3].read_bytes()[:200])
        return ["info", str(tmp_path / "corrupt")]
    if name == "malformed candidates.csv row":
        return _tiny_luna_with(tmp_path, "candidates.csv", f"{SERIES[0]},1,2,oops,0")
    if name == "malformed annotations.csv row":
        return _tiny_luna_with(tmp_path, "annotations.csv", f"{SERIES[0]},1,2,3")
    if name == "NaN coordinate in candidates.csv":
        return _tiny_luna_with(tmp_path, "candidates.csv", f"{SERIES[0]},nan,2,3,0")
    if name == "infinite coordinate in predictions":
        (tmp_path / "pred.csv").write_text(f"seriesuid,coordX,coordY,coordZ,probability\n{UID},1,-inf,3,0.5\n")
        (tmp_path / "annotations.csv").write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID},0,0,0,10\n")
        return ["evaluate", str(tmp_path / "pred.csv"), "--annotations", str(tmp_path / "annotations.csv")]
    if name == "wrong checkpoint kind for --cls-model":
        models = write_models(tmp_path / "models")
        return ["diagnose", str(_scan(tmp_path)), "--seg-model", str(models["seg"]), "--cls-model", str(models["seg"])]
    if name == "wrong checkpoint kind for --resume":
        save_checkpoint(tmp_path / "run" / "last.ckpt", constant_classifier(0.5), kind="cls")
        root = write_tiny_luna(tmp_path / "luna")
        return ["train-seg", "--data-root", str(root), "--out", str(tmp_path / "run"), "--resume"]
    if name == "wrong checkpoint kind for --finetune":
        models = write_models(tmp_path / "models")
        root = write_tiny_luna(tmp_path / "luna")
        return [
            "train-cls",
            "--malignancy",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "run"),
            "--finetune",
            str(models["seg"]),
        ]
    if name in ("pickled code as --seg-model", "pickled code to models info"):
        (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"model_state": _RunsShell(tmp_path / "code-ran")}))
        if name == "pickled code to models info":
            return ["models", "info", str(tmp_path / "evil.ckpt")]
        models = write_models(tmp_path / "models")
        evil = str(tmp_path / "evil.ckpt")
        return ["diagnose", str(_scan(tmp_path)), "--seg-model", evil, "--cls-model", str(models["cls"])]
    if name == "checkpoint shapes do not fit":
        payload = torch.load(write_models(tmp_path / "models")["seg"], weights_only=True)
        payload["model_config"]["wf"] = 3  # a configuration edited after training: 8 channels, not 2
        torch.save(payload, tmp_path / "edited.ckpt")
        return ["models", "info", str(tmp_path / "edited.ckpt")]
    if name == "data root is not a folder":
        return ["series", "list", "--data-root", str(tmp_path / "nope")]
    if name == "data root without series":
        (tmp_path / "nothing").mkdir()
        return ["series", "list", "--data-root", str(tmp_path / "nothing")]
    if name == "data root without series to diagnose --all":
        (tmp_path / "nothing").mkdir()
        models = write_models(tmp_path / "models")
        return [
            "diagnose",
            "--all",
            "--data-root",
            str(tmp_path / "nothing"),
            "--seg-model",
            str(models["seg"]),
            "--cls-model",
            str(models["cls"]),
        ]
    raise AssertionError(name)


SEG, CLS = ("segmentation", "seg"), ("nodule classifier", "cls")
KIND_MESSAGE = (
    r"is a {have} checkpoint \(kind '{have_kind}'\), but {option} needs a {want} checkpoint \(kind '{want_kind}'\); "
    r"pass a {want} checkpoint instead\.$"
)
CASES = {
    # 1-4: series UIDs, folders, .mhd/.raw
    "unknown series": r"^error: series 1\.2\.3\.4\.5 not found under .*luna; try `ct series list`$",
    "uid with slash": r"^error: '1\.2/\.\./3' is not a valid series UID",
    "uid with dotdot": r"^error: '\.\./1\.2\.3' is not a valid series UID",
    "uid too long": r"^error: series UID '1\.2222.*is 72 characters long; a DICOM UID has at most 64",
    "uid with dotdot to prepcache --series": r"^error: '\.\./1\.2' is not a valid series UID",
    "empty folder": r"^error: .*empty: no DICOM files found in this folder or below it$",
    "truncated raw": rf"^error: .*{UID}\.raw: 100 bytes, but the header {UID}\.mhd .* needs 240; the file is truncated",
    # 5: header and data file disagree
    "mhd element type disagrees with raw": rf"^error: .*{UID}\.raw: 240 bytes, but the header {UID}\.mhd "
    r"\(DimSize \[6, 5, 4\], MET_FLOAT\) needs 480; the header's ElementType is wrong "
    r"\(the size fits MET_SHORT or MET_USHORT\) or the file is truncated: fix the header, or re-download the file$",
    "mhd size disagrees with raw": rf"^error: .*{UID}\.raw: 240 bytes, but the header {UID}\.mhd "
    r"\(DimSize \[6, 5, 3\], MET_SHORT\) needs 180; the file is too long: re-download or re-extract it$",
    # 6-11: DICOM
    "non-CT DICOM": rf"^error: series {UID} is modality MR, not CT; ct reads CT series only$",
    "SR without pixel data": rf"^error: series {UID} is modality SR, not CT; ct reads CT series only$",
    "SEG without pixel data, implicit VR": rf"^error: series {UID} is modality SEG, not CT; ct reads CT series only$",
    "missing slice": rf"^error: series {UID}: gap of 4\.000 mm between slices at 4\.000 and 8\.000 mm along the slice "
    r"normal \(000002\.dcm -> 000004\.dcm\), expected 2\.000 mm: about 1 slice\(s\) missing; "
    r"pass --allow-uneven-spacing to resample onto a regular grid$",
    "uneven spacing": rf"^error: series {UID}: gap of 2\.700 mm .*\(000002\.dcm -> x000003\.dcm\), expected 2\.000 mm: "
    r"uneven slice spacing; pass --allow-uneven-spacing",
    "two series in one folder": rf"^error: .*mixed holds 2 series \({UID} \(CT, 3 files\); {UID2} \(CT, 3 files\)\); "
    r"name one with --series UID$",
    "mixed slice orientations": rf"^error: series {UID} mixes slice orientations \(.*o000003\.dcm differs from "
    r".*000000\.dcm\); it is not one 3D volume$",
    "corrupt DICOM file": r"^error: .*corrupt/000003\.dcm: unreadable DICOM file \(corrupt or truncated\); "
    r"remove or replace it$",
    # 12-13: CSVs
    "malformed candidates.csv row": r"^error: .*candidates\.csv:12: coordZ = 'oops' is not a finite number$",
    "malformed annotations.csv row": r"^error: .*annotations\.csv:5: diameter_mm = '' is not a finite number$",
    "NaN coordinate in candidates.csv": r"^error: .*candidates\.csv:12: coordX = 'nan' is not a finite number$",
    "infinite coordinate in predictions": r"^error: .*pred\.csv:2: coordY = '-inf' is not a finite number$",
    # 15-17: checkpoints
    "wrong checkpoint kind for --cls-model": r"^error: .*models/seg\.ckpt "
    + KIND_MESSAGE.format(have=SEG[0], have_kind=SEG[1], option="--cls-model", want=CLS[0], want_kind=CLS[1]),
    "wrong checkpoint kind for --resume": r"^error: .*run/last\.ckpt "
    + KIND_MESSAGE.format(have=CLS[0], have_kind=CLS[1], option="--resume", want=SEG[0], want_kind=SEG[1]),
    "wrong checkpoint kind for --finetune": r"^error: .*models/seg\.ckpt "
    + KIND_MESSAGE.format(have=SEG[0], have_kind=SEG[1], option="--finetune", want=CLS[0], want_kind=CLS[1]),
    "pickled code as --seg-model": r"^error: .*evil\.ckpt holds pickled Python code \((posix|os|nt)\.system\) that would "
    r"run on loading, so it is refused for safety;",
    "pickled code to models info": r"^error: .*evil\.ckpt holds pickled Python code \((posix|os|nt)\.system\)",
    "checkpoint shapes do not fit": r"^error: .*edited\.ckpt does not fit the unet-wrapper model its configuration "
    r"describes: unet\.down_path\.0\.block\.0\.weight has shape \(2, 7, 3, 3\) in the file but \(8, 7, 3, 3\) "
    r"in the model \(and \d+ more mismatches\); use a checkpoint made for this architecture\.$",
    # 20: data roots
    "data root is not a folder": r"^error: data root '.*nope' is not a folder; pass --data-root DIR or set CT_DATA_ROOT$",
    "data root without series": r"^error: no CT series under .*nothing: expected subset\*/<uid>\.mhd files",
    "data root without series to diagnose --all": r"^error: no CT series under .*nothing: expected subset\*/<uid>\.mhd",
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(tmp_path, name):
    result = run_ct(*_case(tmp_path, name))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert re.search(CASES[name], lines[0]), lines[0]
    assert not (tmp_path / "code-ran").exists()  # the pickled command never ran


def test_debug_shows_the_traceback(tmp_path):
    result = run_ct("--debug", *_case(tmp_path, "empty folder"))
    assert result.exit_code != 0
    assert result.exception is not None and "no DICOM files" in str(result.exception)


def _all_command_paths():
    """Every leaf command of the app, as argument lists (e.g. ["series", "list"])."""
    import typer.main

    def walk(command, prefix):
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            yield prefix
            return
        for name, sub in sorted(subcommands.items()):
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


def test_help_of_every_command_has_an_example():
    top = run_ct("--help")
    assert top.exit_code == 0 and "not a medical device" in top.output
    paths = _all_command_paths()
    assert ["info"] in paths and ["series", "list"] in paths
    for args in paths:
        result = run_ct(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        assert "Example" in result.output, f"`ct {' '.join(args)} --help` shows no example"
