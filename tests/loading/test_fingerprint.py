"""A result is reused only when the bytes it came from are the same, through the CLI.

Each case changes one byte of a file the loader reads, keeping its size and restoring its mtime
(what a name/size/mtime fingerprint cannot see), and checks that the result is not reused; and
that nothing else under the data root or the output folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.models import save_checkpoint
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import (
    phantom_chest,
    phantom_geometry,
    threshold_unet,
    write_models,
    write_phantom_luna,
)
from tests.helpers.folder_digest import tree_digest


def _flip_last_byte_keeping_mtime(path: Path) -> None:
    """Change the file's last byte (pixel data in every format here); same size, same mtime."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.fixture()
def models(tmp_path):
    return write_models(tmp_path / "models", nodule_prob=0.8)


def _diagnose(models, out: Path, *sources: object):
    return run_ct(
        "diagnose",
        *sources,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--concurrent-batches",
        1,
    )


def _rerun_sees_the_change(models, out: Path, root: Path, uid: str, changed: Path, *sources: object) -> None:
    """Diagnose, re-run (skipped), change ``changed``'s bytes, re-run: diagnosed again, only its result rewritten."""
    first = _diagnose(models, out, *sources)
    assert first.exit_code == 0, first.output
    fingerprint = json.loads((out / f"{uid}.json").read_text())["provenance"]["source_fingerprint"]
    repeat = _diagnose(models, out, *sources)
    assert repeat.exit_code == 0 and repeat.stderr.count("skipped ") == 1, repeat.output

    _flip_last_byte_keeping_mtime(changed)
    root_before, out_before = tree_digest(root), tree_digest(out)
    again = _diagnose(models, out, *sources)
    assert again.exit_code == 0, again.output
    redone = [line for line in again.stderr.splitlines() if line.startswith("redid ")]
    assert redone == [
        f"redid {sources[-1] if sources[0] != '--all' else uid}: {out / (uid + '.json')} was made with another "
        "the source files; diagnosing it again"
    ], again.stderr
    assert "skipped" not in again.stderr
    new_fingerprint = json.loads((out / f"{uid}.json").read_text())["provenance"]["source_fingerprint"]
    assert new_fingerprint.startswith("sha256:") and new_fingerprint != fingerprint
    assert tree_digest(root) == root_before  # diagnose never writes into the data
    out_after = tree_digest(out)
    assert set(out_after) == set(out_before)
    # the result is rewritten (its fingerprint changed), the table beside it, and the run's log line
    rewritten = {k for k in out_after if out_after[k] != out_before[k]}
    assert out / f"{uid}.json" in rewritten
    assert rewritten <= {
        out / name for name in (f"{uid}.json", "findings.csv", "findings.csv.provenance", "logs/diagnose.log")
    }


def test_an_mhd_raw_changed_in_place_is_diagnosed_again(tmp_path, models):
    root = tmp_path / "luna"
    (uid,) = write_phantom_luna(root, 1, first=80)
    _rerun_sees_the_change(
        models, tmp_path / "out", root, uid, root / "subset0" / f"{uid}.raw", "--all", "--data-root", root
    )


def test_an_mhd_data_file_named_by_its_header_not_uid_raw_is_fingerprinted(tmp_path, models):
    """ElementDataFile names a file in a sub-folder: that file is what the loader reads, so it counts."""
    root = tmp_path / "luna"
    (uid,) = write_phantom_luna(root, 1, first=81)
    header = root / "subset0" / f"{uid}.mhd"
    (root / "subset0" / "pixels").mkdir()
    data = root / "subset0" / "pixels" / "volume.img"
    (root / "subset0" / f"{uid}.raw").rename(data)
    header.write_text(header.read_text().replace(f"ElementDataFile = {uid}.raw", "ElementDataFile = pixels/volume.img"))
    _rerun_sees_the_change(models, tmp_path / "out", root, uid, data, header)


def test_a_dicom_series_spread_over_two_folders_changed_in_place_is_diagnosed_again(tmp_path, models):
    root = tmp_path / "dicom"
    uid = "1.2.826.0.1.3680043.8.498.85"
    files = write_dicom_series(phantom_chest(), phantom_geometry(), root / "scan" / "a", uid)
    (root / "scan" / "b").mkdir()
    for path in files[len(files) // 2 :]:  # the second half of the slices in another folder
        shutil.move(path, root / "scan" / "b" / path.name)
    _rerun_sees_the_change(
        models, tmp_path / "out", root, uid, root / "scan" / "b" / files[-1].name, "--all", "--data-root", root
    )


# -- ct compare --prior-results -------------------------------------------------------------------


@pytest.mark.slow
def test_compare_refuses_prior_results_made_from_other_bytes(tmp_path):
    from ct_pipeline.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path / "fu"
    write_synthetic_dataset(SynthConfig(out_dir=root, n_series=1, seed=7, size="small", dicom=True, follow_up=True))
    with open(root / "followup_pairs.csv", encoding="utf-8") as handle:
        header, row = (line.strip().split(",") for line in handle.readlines()[:2])
    pair = dict(zip(header, row))
    prior, current = (root / "dicom" / pair[k] for k in ("prior_seriesuid", "current_seriesuid"))
    # a U-Net that finds nothing keeps both diagnoses and the comparison short
    models = write_models(tmp_path / "models")
    save_checkpoint(models["seg"], threshold_unet(level_hu=5000.0), kind="seg")
    results = tmp_path / "results"
    made = _diagnose(models, results, prior, current)
    assert made.exit_code == 0, made.output

    def compare():
        return run_ct("compare", prior, current, "--prior-results", results, "--current-results", results, "--json")

    used = compare()
    assert used.exit_code == 0, used.output
    slice_file = sorted(prior.rglob("*.dcm"))[3]
    _flip_last_byte_keeping_mtime(slice_file)
    before = tree_digest(root, results)
    refused = compare()
    assert refused.exit_code == 2, refused.output
    assert error_line(refused) == (
        f"error: --prior-results {results / (pair['prior_seriesuid'] + '.json')} was made from other bytes than "
        f"series {pair['prior_seriesuid']} holds now (its files changed since); diagnose it again, or drop "
        "--prior-results to let ct compare diagnose it"
    )
    assert tree_digest(root, results) == before
