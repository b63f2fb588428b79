"""Every bad input ends with exit code 2 and one line that says what is wrong (no traceback)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.geometry import Geometry
from ct_pipeline.loading.mhd import write_mhd

UID = "1.2.826.0.1.3680043.8.498.7"
IDENTITY = Geometry((0.0, 0.0, 0.0), (0.7, 0.7, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _luna_root(tmp_path):
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    write_mhd(np.zeros((4, 5, 6), np.int16), IDENTITY, root / "subset0" / f"{UID}.mhd")
    return root


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
    if name == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["info", str(tmp_path / "empty")]
    if name == "truncated raw":
        root = _luna_root(tmp_path)
        raw = root / "subset0" / f"{UID}.raw"
        raw.write_bytes(raw.read_bytes()[:100])
        return ["info", UID, "--data-root", str(root)]
    if name == "non-CT DICOM":
        write_dicom_series(np.zeros((3, 4, 4), np.int16), IDENTITY, tmp_path / "mr", UID, modality="MR")
        return ["info", str(tmp_path / "mr")]
    if name == "data root is not a folder":
        return ["series", "list", "--data-root", str(tmp_path / "nope")]
    if name == "data root without series":
        (tmp_path / "nothing").mkdir()
        return ["series", "list", "--data-root", str(tmp_path / "nothing")]
    raise AssertionError(name)


CASES = {
    "unknown series": r"^error: series 1\.2\.3\.4\.5 not found under .*luna; try `ct series list`$",
    "uid with slash": r"^error: '1\.2/\.\./3' is not a valid series UID",
    "uid with dotdot": r"^error: '\.\./1\.2\.3' is not a valid series UID",
    "uid too long": r"^error: series UID '1\.2222.*is 72 characters long; a DICOM UID has at most 64",
    "empty folder": r"^error: .*empty: no DICOM files found in this folder or below it$",
    "truncated raw": rf"^error: .*{UID}\.raw: 100 bytes, but the header {UID}\.mhd .* needs 240; the file is truncated",
    "non-CT DICOM": rf"^error: series {UID} is modality MR, not CT; ct reads CT series only$",
    "data root is not a folder": r"^error: data root '.*nope' is not a folder; pass --data-root DIR or set CT_DATA_ROOT$",
    "data root without series": r"^error: no CT series under .*nothing: expected subset\*/<uid>\.mhd files",
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(tmp_path, name):
    result = CliRunner().invoke(app, _case(tmp_path, name))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    import re

    assert re.search(CASES[name], lines[0]), lines[0]


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(app, ["--debug", *_case(tmp_path, "empty folder")])
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
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "not a medical device" in top.output
    paths = _all_command_paths()
    assert ["info"] in paths and ["series", "list"] in paths
    for args in paths:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Example" in result.output, f"`ct {' '.join(args)} --help` shows no example"
