"""`ct synth` output is read by `ct series list` and `ct info`, as .mhd and as DICOM, with the same geometry."""

import json

import numpy as np
import pytest

from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from tests.helpers.cli_process import run_ct


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic_dataset(
        SynthConfig(out_dir=out, n_series=2, seed=3, size="small", dicom=True, oblique_fraction=1.0)
    )
    return out


def test_series_list_finds_every_synthetic_series(synth_root):
    result = run_ct("series", "list", "--data-root", str(synth_root / "subset0"), "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    expected = sorted(p.stem for p in (synth_root / "subset0").glob("*.mhd"))
    assert sorted(e["series_uid"] for e in listed) == expected
    assert {e["format"] for e in listed} == {"mhd"}


def test_info_of_mhd_and_dicom_agree(synth_root):
    uid = sorted(p.stem for p in (synth_root / "subset0").glob("*.mhd"))[0]
    by_uid = run_ct("info", uid, "--data-root", str(synth_root / "subset0"), "--json")
    by_dicom = run_ct("info", str(synth_root / "dicom" / uid), "--json")
    assert by_uid.exit_code == 0 and by_dicom.exit_code == 0, (by_uid.output, by_dicom.output)
    mhd, dcm = json.loads(by_uid.stdout), json.loads(by_dicom.stdout)
    assert (mhd["format"], dcm["format"]) == ("mhd", "dicom")
    assert mhd["series_uid"] == dcm["series_uid"] == uid
    assert mhd["shape_irc"] == dcm["shape_irc"]
    assert np.allclose(mhd["spacing_xyz"], dcm["spacing_xyz"], atol=1e-4)
    assert np.allclose(mhd["origin_xyz"], dcm["origin_xyz"], atol=1e-3)
    assert np.allclose(mhd["direction"], dcm["direction"], atol=1e-5)
    assert mhd["direction"] != [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], "oblique series requested"
    assert (mhd["hu_min"], mhd["hu_max"]) == (dcm["hu_min"], dcm["hu_max"])
