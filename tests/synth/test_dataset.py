"""write_synthetic_dataset: files, determinism, and the truth of every coordinate written."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.loading.mhd import load_mhd
from ct_pipeline.luna16 import Luna16Tables, build_candidate_table
from ct_pipeline.paths import is_series_uid
from ct_pipeline.synth import SynthConfig, generate_series, write_synthetic_dataset
from ct_pipeline.synth.config import direction_kinds, plan_series
from ct_pipeline.synth.nodules import shape_volume_mm3
from ct_pipeline.synth.tables import ANNOTATION_HEADER, CANDIDATE_HEADER, MALIGNANCY_HEADER, TRUTH_HEADER


def _config(out_dir: Path, **kwargs) -> SynthConfig:
    # 3 series: one identity, one oblique, one with two axes flipped.
    options = {"n_series": 3, "seed": 5, "size": "small", "oblique_fraction": 0.3, "flip_fraction": 0.34}
    return SynthConfig(out_dir=out_dir, **{**options, **kwargs})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("synth") / "data")
    result = write_synthetic_dataset(config)
    return config, result


@pytest.fixture(scope="module")
def in_memory(dataset):
    config, _ = dataset
    kinds = direction_kinds(config)
    return [generate_series(config, plan_series(config, i, *kinds[i])) for i in range(config.n_series)]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"seriesuid": str})


def test_layout_and_headers(dataset):
    config, result = dataset
    out = config.out_dir
    uids = [s.series_uid for s in result.series]
    assert sorted(p.name for p in (out / "subset0").iterdir()) == sorted(
        f"{u}.{e}" for u in uids for e in ("mhd", "raw")
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".ct-synth-manifest.json",
        "README.txt",
        "annotations.csv",
        "annotations_with_malignancy.csv",
        "candidates.csv",
        "nodule_truth.csv",
        "subset0",
    ]
    for name, header in [
        ("candidates.csv", CANDIDATE_HEADER),
        ("annotations.csv", ANNOTATION_HEADER),
        ("annotations_with_malignancy.csv", MALIGNANCY_HEADER),
    ]:
        assert (out / name).read_text().splitlines()[0] == ",".join(header)
    assert MALIGNANCY_HEADER == [
        "seriesuid",
        "coordX",
        "coordY",
        "coordZ",
        "diameter_mm",
        "mal_bool",
        "mal_details",
        "bboxLowX",
        "bboxLowY",
        "bboxLowZ",
        "bboxHighX",
        "bboxHighY",
        "bboxHighZ",
        "len_mal_details",
    ]
    readme = (out / "README.txt").read_text()
    assert "Synthetic chest CT data for testing `ct`" in readme and "--series 3 --seed 5 --size small" in readme
    assert sorted(s.direction_kind for s in result.series) == ["flipped", "identity", "oblique"]


def test_uids_valid_and_consistent(dataset):
    config, result = dataset
    uids = {s.series_uid for s in result.series}
    assert len(uids) == 3 and all(is_series_uid(u) for u in uids)
    for name in ("candidates.csv", "annotations.csv", "annotations_with_malignancy.csv"):
        assert set(_read(config.out_dir / name)["seriesuid"]) <= uids


def test_same_seed_same_bytes_other_seed_other_data(dataset, tmp_path):
    config, _ = dataset
    again = _config(tmp_path / "again")
    write_synthetic_dataset(again)
    first = sorted(p.relative_to(config.out_dir) for p in config.out_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        if rel.name not in ("README.txt", ".ct-synth-manifest.json"):  # its own folder's name; file mtimes
            assert (config.out_dir / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    other = _config(tmp_path / "other", seed=6, n_series=1)
    write_synthetic_dataset(other)
    other_raw = next((other.out_dir / "subset0").glob("*.raw")).read_bytes()
    assert all(other_raw != p.read_bytes() for p in (config.out_dir / "subset0").glob("*.raw"))


def test_volumes_look_like_chest_ct(dataset, in_memory):
    config, _ = dataset
    for series in in_memory:
        volume = load_mhd(config.out_dir / "subset0" / f"{series.layout.series_uid}.mhd")
        np.testing.assert_array_equal(volume.hu, series.hu)
        assert volume.geometry == series.layout.geometry
        hu = volume.hu
        assert hu.dtype == np.int16 and hu.min() >= -1024 and hu.max() <= 3071
        assert 40 <= hu.shape[0] <= 80 and hu.shape[1:] == (128, 128)
        lung = series.lung_mask
        assert 0.03 < lung.mean() < 0.35
        assert -910 < hu[lung].mean() < -790  # lungs ~ -850 HU, vessels included
        corner = hu[:, :8, :8]
        assert -1030 < corner.mean() < -960 and 15 < corner.std() < 45  # air with noise
        assert (hu > 400).mean() > 0.002  # bone is there
        body_not_lung = (hu > -300) & ~lung
        assert body_not_lung.mean() > 0.2


def test_annotations_point_at_nodules(dataset, in_memory):
    config, _ = dataset
    annotations = _read(config.out_dir / "annotations.csv")
    assert len(annotations) == sum(len(s.nodules) for s in in_memory) >= 3
    for series in in_memory:
        rows = annotations[annotations["seriesuid"] == series.layout.series_uid]
        volume = load_mhd(config.out_dir / "subset0" / f"{series.layout.series_uid}.mhd")
        xyz = rows[["coordX", "coordY", "coordZ"]].to_numpy()
        irc = volume.geometry.xyz_to_irc(xyz)
        assert np.all(irc > -0.5) and np.all(irc < np.array(volume.hu.shape) - 0.5)
        for nodule, center_irc, diameter in zip(series.nodules, np.rint(irc).astype(int), rows["diameter_mm"]):
            assert diameter == pytest.approx(nodule.diameter_mm)
            assert 3.0 <= diameter <= 30.0
            center_hu = volume.hu[tuple(center_irc)]
            assert center_hu > (-400 if nodule.kind == "solid" else -700), (nodule.kind, center_hu)
            assert series.lung_mask[tuple(center_irc)], "nodule centres are in the lung"
        if series.layout.oblique or any(series.layout.flips_irc):
            # Ignoring the direction puts every nodule somewhere else.
            naive_irc = ((xyz - volume.geometry.origin_xyz) / volume.geometry.spacing_xyz)[:, ::-1]
            assert np.all(np.abs(naive_irc - irc).max(axis=1) > 2.0)


def test_malignancy_table(dataset, in_memory):
    config, _ = dataset
    plain = _read(config.out_dir / "annotations.csv")
    table = _read(config.out_dir / "annotations_with_malignancy.csv")
    pd.testing.assert_frame_equal(table[list(plain.columns)], plain)
    with open(config.out_dir / "annotations_with_malignancy.csv", newline="") as handle:
        raw_rows = list(csv.reader(handle))[1:]
    nodules = [n for s in in_memory for n in s.nodules]
    for row, (_, record), nodule in zip(raw_rows, table.iterrows(), nodules):
        assert row[5] in ("True", "False")
        ratings = ast.literal_eval(row[6])
        assert row[6] == "[" + ", ".join(str(r) for r in ratings) + "]"  # LUNA16's "[4, 2, 4, 2]"
        assert all(1 <= r <= 5 for r in ratings) and int(row[13]) == len(ratings) in (3, 4)
        assert (row[5] == "True") == (np.mean(ratings) > 3) == nodule.is_malignant
        center = record[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
        low = record[["bboxLowX", "bboxLowY", "bboxLowZ"]].to_numpy(dtype=float)
        high = record[["bboxHighX", "bboxHighY", "bboxHighZ"]].to_numpy(dtype=float)
        assert np.all(low < center) and np.all(center < high)
        assert np.all(high - low >= record["diameter_mm"] - 1e-6)


def test_candidates(dataset, in_memory):
    config, _ = dataset
    candidates = _read(config.out_dir / "candidates.csv")
    annotations = _read(config.out_dir / "annotations.csv")
    assert set(candidates["class"]) <= {0, 1}
    low, high = config.preset.candidates_per_series
    for series in in_memory:
        uid = series.layout.series_uid
        rows = candidates[candidates["seriesuid"] == uid]
        negatives = rows[rows["class"] == 0]
        assert low <= len(negatives) <= high
        xyz = rows[["coordX", "coordY", "coordZ"]].to_numpy()
        irc = series.layout.geometry.xyz_to_irc(xyz)
        assert np.all(irc > -0.51) and np.all(irc < np.array(series.hu.shape) - 0.49), "on the grid"
        sources = pd.Series(series.candidates.sources)
        assert sources[sources != "nodule"].isin(["vessel", "wall"]).mean() > 0.6, "mostly vessels and walls"
        for _, nodule in annotations[annotations["seriesuid"] == uid].iterrows():
            center = nodule[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
            distance = np.linalg.norm(xyz - center, axis=1)
            radius = nodule["diameter_mm"] / 2
            near = rows["class"].to_numpy()[distance < radius]
            assert len(near) >= 1 and np.all(near == 1)
            # The book's matching rule: every axis within diameter / 4.
            close = np.all(np.abs(xyz - center) <= nodule["diameter_mm"] / 4, axis=1)
            assert np.any(close & (rows["class"].to_numpy() == 1))
        n_positive = int((rows["class"] == 1).sum())
        assert n_positive >= len(series.nodules)
        # every class-1 candidate belongs to some nodule
        nodule_xyz = series.nodule_xyz
        for point in xyz[rows["class"].to_numpy() == 1]:
            assert np.min(np.linalg.norm(nodule_xyz - point, axis=1)) < 15.0


def test_tables_load_with_the_luna16_reader(dataset, in_memory):
    config, _ = dataset
    table = build_candidate_table(Luna16Tables.in_folder(config.out_dir))
    n_nodules = sum(len(s.nodules) for s in in_memory)
    assert int(table["is_nodule"].sum()) == n_nodules
    assert int(table["is_malignant"].sum()) == sum(n.is_malignant for s in in_memory for n in s.nodules)


def test_refuses_non_empty_folder_and_overwrite_replaces(tmp_path):
    out = tmp_path / "data"
    write_synthetic_dataset(_config(out, n_series=2))
    with pytest.raises(BadInputError, match=r"is not empty; pick a new folder or pass --overwrite"):
        write_synthetic_dataset(_config(out, n_series=1))
    left_by_a_killed_run = out / "dicom" / ".1.2.3.partial"
    left_by_a_killed_run.mkdir(parents=True)
    write_synthetic_dataset(_config(out, n_series=1, overwrite=True))
    assert len(list((out / "subset0").glob("*.mhd"))) == 1
    assert not left_by_a_killed_run.exists()
    assert set(_read(out / "candidates.csv")["seriesuid"]) == {p.stem for p in (out / "subset0").glob("*.mhd")}
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="is a file"):
        write_synthetic_dataset(_config(tmp_path / "file", n_series=1))


def test_truth_table_gives_each_nodules_shape_volume(dataset, in_memory):
    config, _ = dataset
    truth = _read(config.out_dir / "nodule_truth.csv")
    annotations = _read(config.out_dir / "annotations.csv")
    assert list(truth.columns) == TRUTH_HEADER
    pd.testing.assert_frame_equal(truth[ANNOTATION_HEADER], annotations)
    nodules = [n for series in in_memory for n in series.nodules]
    assert len(nodules) == len(truth) > 0
    for nodule, row in zip(nodules, truth.itertuples()):
        assert row.volume_mm3 == pytest.approx(shape_volume_mm3(nodule), rel=1e-6)
        assert row.kind == nodule.kind and row.juxtapleural == nodule.juxtapleural
        # lobes push the surface out by at most their amplitudes, pull it in by at most 10 %
        sphere = np.pi / 6 * nodule.diameter_mm**3
        assert 0.9**3 * sphere <= row.volume_mm3 <= (nodule.max_radius_mm * 2 / nodule.diameter_mm) ** 3 * sphere


def test_shape_volume_of_a_nodule_without_lobes_is_the_spheres(in_memory):
    import dataclasses

    nodule = next(n for series in in_memory for n in series.nodules)
    smooth = dataclasses.replace(nodule, lobes=(), diameter_mm=10.0)
    assert shape_volume_mm3(smooth) == pytest.approx(np.pi / 6 * 1000.0, rel=1e-9)
