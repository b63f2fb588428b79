"""Symbolic links under a data root, through the CLI: one discovery for every command.

A linked ``subset0/`` is found by ``ct series list``, ``ct prepcache``, training and
``ct diagnose --all`` alike (as a look-up by UID already found it); a link loop, among files or
folders, is a warning about an unreadable file or skipped, never an internal error.
"""

from __future__ import annotations

import json

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from tests.helpers.cli_process import error_line, run_ct, words
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.training_data import series_uid, write_training_luna


@pytest.fixture()
def linked_root(tmp_path):
    """A data root whose ``subset0`` is a link to the series kept elsewhere; the CSVs are in the root."""
    real = write_training_luna(tmp_path / "store", n_series=3)
    root = tmp_path / "root"
    root.mkdir()
    (root / "subset0").symlink_to(real / "subset0", target_is_directory=True)
    for name in ("candidates.csv", "annotations.csv", "annotations_with_malignancy.csv"):
        (root / name).write_bytes((real / name).read_bytes())
    return root


def test_a_linked_subset_is_listed_cached_trained_on_and_diagnosed(linked_root, tmp_path):
    root = linked_root
    before = tree_digest(root)
    listed = run_ct("series", "list", "--data-root", root, "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(s["series_uid"] for s in json.loads(listed.stdout)) == [series_uid(n) for n in range(3)]

    cache_dir = tmp_path / "cache"
    filled = run_ct("prepcache", "--data-root", root, "--cache-dir", cache_dir)
    assert filled.exit_code == 0, filled.output
    assert "3 filled" in words(filled.stdout)

    trained = run_ct(
        "train-cls",
        "--data-root",
        root,
        "--cache-dir",
        cache_dir,
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        "--epoch-size",
        16,
        "--batch-size",
        8,
        "--val-stride",
        3,
        "--workers",
        0,
    )
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "last.ckpt").is_file()

    models = write_models(tmp_path / "models")
    out = tmp_path / "out"
    diagnosed = run_ct(
        "diagnose",
        "--all",
        "--data-root",
        root,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--concurrent-batches",
        1,
    )
    assert diagnosed.exit_code == 0, diagnosed.output
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{series_uid(n)}.json" for n in range(3))
    assert tree_digest(root) == before


def test_a_link_loop_among_dicom_files_is_an_unreadable_file_and_a_folder_loop_is_walked_once(tmp_path):
    root = tmp_path / "dicom"
    uid = "1.2.826.0.1.3680043.8.498.86"
    write_dicom_series(phantom_chest(), phantom_geometry(), root / "scan", uid)
    (root / "scan" / "loop-a.dcm").symlink_to(root / "scan" / "loop-b.dcm")
    (root / "scan" / "loop-b.dcm").symlink_to(root / "scan" / "loop-a.dcm")
    (root / "scan" / "up").symlink_to(root, target_is_directory=True)  # a folder link back to the root
    before = tree_digest(tmp_path)
    warning = (
        f"WARNING: skipped 2 unreadable DICOM files (corrupt, truncated or not DICOM): {root / 'scan' / 'loop-a.dcm'}, "
        f"{root / 'scan' / 'loop-b.dcm'}; a series they belonged to may lack slices (`ct info` on their folder says why)"
    )

    listed = run_ct("series", "list", "--data-root", root, "--json")
    assert listed.exit_code == 0, listed.output
    assert [s["series_uid"] for s in json.loads(listed.stdout)] == [uid]
    assert warning in words(listed.stderr)
    assert "found twice" not in listed.stderr

    models = write_models(tmp_path / "models")
    out = tmp_path / "out"
    diagnosed = run_ct(
        "diagnose",
        "--all",
        "--data-root",
        root,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--concurrent-batches",
        1,
    )
    assert diagnosed.exit_code == 0, diagnosed.output
    assert warning in words(diagnosed.stderr)
    assert [p.name for p in out.glob("*.json")] == [f"{uid}.json"]

    # the folder itself: the loop is named as the unreadable file it is, in one line
    info = run_ct("info", root / "scan")
    assert info.exit_code == 2, info.output
    assert error_line(info) == (
        f"error: {root / 'scan' / 'loop-a.dcm'}: cannot read this DICOM file (Too many levels of symbolic links); "
        "remove or replace it"
    )
    assert tree_digest(root) == {k: v for k, v in before.items() if root in k.parents}


def test_a_link_loop_in_a_luna16_root_does_not_stop_prepcache(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=3)
    (root / "subset0" / "loop-a.dcm").symlink_to(root / "subset0" / "loop-b.dcm")
    (root / "subset0" / "loop-b.dcm").symlink_to(root / "subset0" / "loop-a.dcm")
    (root / "subset0" / "again").symlink_to(root / "subset0", target_is_directory=True)
    filled = run_ct("prepcache", "--data-root", root, "--cache-dir", tmp_path / "cache")
    assert filled.exit_code == 0, filled.output
    assert "3 filled" in words(filled.stdout)
    assert "skipped 2 unreadable DICOM files" in words(filled.stderr)
    assert "found twice" not in filled.stderr
