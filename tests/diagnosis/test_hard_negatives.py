"""`ct hard-negatives`: the U-Net's candidates far from annotated nodules, on training series only."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from ct_pipeline.catalog import open_catalog
from ct_pipeline.diagnosis.hard_negatives import HardNegativeConfig, far_from_nodules, hits_nodule, labelled_candidates
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import NODULES_IRC, phantom_geometry, write_models, write_phantom_luna


def _centre_xyz(irc) -> np.ndarray:
    return phantom_geometry().irc_to_xyz(np.asarray(irc, dtype=np.float64))


def test_far_from_nodules_keeps_the_clearance_of_each_nodule():
    nodules = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    diameters = np.array([10.0, 3.0])
    centers = np.array([[9.9, 0, 0], [10.1, 0, 0], [54.9, 0, 0], [55.1, 0, 0], [30.0, 0, 0]])
    keep = far_from_nodules(
        centers, nodules, diameters, HardNegativeConfig(clearance_diameters=1.0, min_clearance_mm=5.0)
    )
    # 10 mm around the big nodule (one diameter), 5 mm around the small one (the floor)
    assert keep.tolist() == [False, True, False, True, True]
    assert far_from_nodules(centers, np.zeros((0, 3)), np.zeros(0), HardNegativeConfig()).all()


def test_the_unannotated_bright_sphere_is_a_hard_negative_of_the_training_series(tmp_path):
    root = tmp_path / "data"
    uids = write_phantom_luna(root, 4)
    annotated, unannotated = (_centre_xyz(irc) for irc in NODULES_IRC)
    pd.DataFrame(
        [
            {
                "seriesuid": uid,
                "coordX": annotated[0],
                "coordY": annotated[1],
                "coordZ": annotated[2],
                "diameter_mm": 6.4,
            }
            for uid in uids
        ]
    ).to_csv(root / "annotations.csv", index=False)
    pd.DataFrame(
        [{"seriesuid": uid, "coordX": 0.0, "coordY": 0.0, "coordZ": -80.0, "class": 0} for uid in uids]
    ).to_csv(root / "candidates.csv", index=False)
    # No --seg-model: the newest U-Net under --runs-dir, as in every command with models
    best = tmp_path / "runs" / "train-seg" / "best.ckpt"
    best.parent.mkdir(parents=True)
    shutil.copy(write_models(tmp_path / "models")["seg"], best)
    out = tmp_path / "hard.csv"
    result = run_ct(
        "hard-negatives",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-root",
        str(root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--val-stride",
        "2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"using --seg-model {best}"
    table = pd.read_csv(out)
    catalog = open_catalog([root], tmp_path / "cache")
    train, val = catalog.split(2)
    assert sorted(set(table["seriesuid"])) == train and not set(val) & set(table["seriesuid"])
    assert (table["class"] == 0).all()
    centers = table[["coordX", "coordY", "coordZ"]].to_numpy()
    for uid in train:
        mine = centers[table["seriesuid"].to_numpy() == uid]
        assert np.linalg.norm(mine - unannotated, axis=1).min() < 2.0  # the false positive is there
        assert np.linalg.norm(mine - annotated, axis=1).min() > 6.4  # the annotated nodule is not
    # `ct train-cls --extra-candidates` reads it as more non-nodules of those series
    extended = open_catalog([root], tmp_path / "cache", [out])
    added = extended.candidates[~extended.candidates["is_nodule"]]
    assert len(added) == len(catalog.candidates[~catalog.candidates["is_nodule"]]) + len(table)
    assert extended.candidates["is_nodule"].sum() == catalog.candidates["is_nodule"].sum()


def test_without_a_seg_model_or_one_under_runs_dir_it_says_what_to_pass(tmp_path):
    result = run_ct("hard-negatives", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "hard.csv"))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: no segmentation checkpoint found under {tmp_path / 'runs'}; pass --seg-model PATH"
    )
    assert not (tmp_path / "hard.csv").exists()


def test_with_positives_a_hit_is_class_1_a_piece_in_between_neither_and_the_cap_spares_positives():
    nodule, diameter = np.array([[0.0, 0.0, 0.0]]), np.array([10.0])
    centers = np.array(
        [
            [40.0, 0, 0],  # far: a false positive, small
            [4.9, 0, 0],  # within the radius (5 mm): a hit
            [7.0, 0, 0],  # a piece of the nodule's mask off its centre: neither
            [0, 30.0, 0],  # far, large
            [0, 0, 5.0],  # on the radius: still a hit (LUNA16 counts <=)
            [0, 0, -10.0],  # one diameter away: far enough again
        ]
    )
    n_voxels = np.array([5, 50, 40, 90, 30, 10])
    labelled = labelled_candidates(
        "1.2.3", centers, n_voxels, nodule, diameter, HardNegativeConfig(max_per_series=2, with_positives=True)
    )
    # in the candidates' order; negatives capped to the 2 largest, positives never
    assert labelled[["coordX", "coordY", "coordZ"]].to_numpy().tolist() == [
        [4.9, 0, 0],
        [0, 30.0, 0],
        [0, 0, 5.0],
        [0, 0, -10.0],
    ]
    assert labelled["class"].tolist() == [1, 0, 1, 0] and (labelled["seriesuid"] == "1.2.3").all()
    negatives_only = labelled_candidates("1.2.3", centers, n_voxels, nodule, diameter, HardNegativeConfig())
    assert negatives_only[["coordX", "coordY", "coordZ", "class"]].to_numpy().tolist() == [
        [40.0, 0, 0, 0],
        [0, 30.0, 0, 0],
        [0, 0, -10.0, 0],
    ]
    assert hits_nodule(centers, np.zeros((0, 3)), np.zeros(0)).tolist() == [False] * 6


def test_with_positives_the_annotated_sphere_is_class_1_and_the_other_class_0(tmp_path):
    root = tmp_path / "data"
    uids = write_phantom_luna(root, 4)
    annotated, unannotated = (_centre_xyz(irc) for irc in NODULES_IRC)
    pd.DataFrame(
        [
            {"seriesuid": u, "coordX": annotated[0], "coordY": annotated[1], "coordZ": annotated[2], "diameter_mm": 6.4}
            for u in uids
        ]
    ).to_csv(root / "annotations.csv", index=False)
    out = tmp_path / "own.csv"
    result = run_ct(
        "hard-negatives",
        "--with-positives",
        "--seg-model",
        str(write_models(tmp_path / "models")["seg"]),
        "--data-root",
        str(root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--val-stride",
        "2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    train = open_catalog([root], tmp_path / "cache").split(2)[0]
    assert f"{len(table)} candidates ({(table['class'] == 1).sum()} hitting a nodule) of 2 training series" in (
        result.stdout.replace("\n", " ")
    )
    for uid in train:
        mine = table[table["seriesuid"] == uid]
        centers = mine[["coordX", "coordY", "coordZ"]].to_numpy()
        hits = np.linalg.norm(centers - annotated, axis=1) <= 3.2
        assert hits.any() and (mine["class"].to_numpy()[hits] == 1).all()
        assert (mine["class"].to_numpy()[~hits] == 0).all()
        assert (mine["class"].to_numpy()[np.linalg.norm(centers - unannotated, axis=1) < 2.0] == 0).sum() == 1
    # `ct train-cls --own-candidates` reads both classes as the own pool
    catalog = open_catalog([root], tmp_path / "cache", own_candidates=[out])
    own = catalog.candidates[catalog.candidates["is_own"]]
    assert len(own) == len(table) and own["is_nodule"].sum() == (table["class"] == 1).sum()
