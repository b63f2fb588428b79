"""No output replaces an input (#26): every writing command refuses, before any work, an output
that names a file it reads, with exit 2, one line naming both options, and every folder unchanged."""

from __future__ import annotations

import shutil

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.training_data import write_training_luna


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {message}"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A LUNA16 folder: six tiny series and the three tables."""
    return write_training_luna(tmp_path_factory.mktemp("luna") / "data")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"), nodule_prob=0.8)


@pytest.fixture()
def data(tmp_path, data_root):
    """A copy of the data root this test may (wrongly) change."""
    return shutil.copytree(data_root, tmp_path / "data")


@pytest.mark.parametrize("evaluate", [[], ["--evaluate"]], ids=["plain", "evaluate"])
def test_diagnose_csv_over_the_data_roots_annotations_is_refused(tmp_path, data, models, evaluate):
    before = tree_digest(data, models["seg"].parent)
    target = data / "annotations.csv"
    result = run_ct(
        "diagnose",
        "--all",
        "--data-root",
        data,
        "--csv",
        target,
        *evaluate,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--concurrent-batches",
        1,
    )
    _refused(result, f"--csv {target} is a file this command reads (--data-root {data}); choose another --csv")
    assert tree_digest(data, models["seg"].parent) == before


def test_diagnose_out_folder_over_a_checkpoint_it_loads_is_refused(tmp_path, data, models):
    """A checkpoint named like a per-series result in --out would be replaced by one."""
    out = tmp_path / "out"
    out.mkdir()
    seg = out / "seg.json"  # an odd name, but a file the run reads
    shutil.copy(models["seg"], seg)
    before = tree_digest(data, out)
    result = run_ct(
        "diagnose", "--all", "--data-root", data, "--out", out, "--seg-model", seg, "--cls-model", models["cls"]
    )
    _refused(
        result, f"--out {out} would overwrite {seg}, which this command reads (--seg-model {seg}); choose another --out"
    )
    assert tree_digest(data, out) == before


def test_diagnose_evaluate_csv_over_its_annotations_file_is_refused(tmp_path, data, models):
    annotations = tmp_path / "truth.csv"
    shutil.copy(data / "annotations_with_malignancy.csv", annotations)
    before, truth = tree_digest(data), annotations.read_bytes()
    result = run_ct(
        "diagnose",
        "--all",
        "--data-root",
        data,
        "--evaluate",
        "--annotations",
        annotations,
        "--csv",
        annotations,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
    )
    _refused(
        result, f"--csv {annotations} is a file this command reads (--annotations {annotations}); choose another --csv"
    )
    assert tree_digest(data) == before and annotations.read_bytes() == truth


def test_diagnose_out_may_be_the_data_root_itself(tmp_path, data, models):
    """Nothing it writes there (*.json, findings.csv, logs/) is a table or a series: allowed, data kept."""
    tables = {name: (data / name).read_bytes() for name in ("annotations.csv", "candidates.csv")}
    uid = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))[0]
    result = run_ct(
        "diagnose", uid, "--data-root", data, "--out", data, "--seg-model", models["seg"], "--cls-model", models["cls"]
    )
    assert result.exit_code == 0, result.output
    assert (data / f"{uid}.json").is_file() and (data / "findings.csv").is_file()
    assert {name: (data / name).read_bytes() for name in tables} == tables


def test_train_out_over_its_finetune_checkpoint_is_refused(tmp_path, data, models):
    run = tmp_path / "runs" / "cls"
    run.mkdir(parents=True)
    shutil.copy(models["cls"], run / "best.ckpt")
    before = tree_digest(data, run)
    result = run_ct(
        "train-cls",
        "--malignancy",
        "--finetune",
        run / "best.ckpt",
        "--out",
        run,
        "--data-root",
        data,
        "--epochs",
        1,
        "--epoch-size",
        8,
        "--batch-size",
        4,
        "--workers",
        0,
        "--device",
        "cpu",
    )
    _refused(
        result,
        f"--out {run} would overwrite {run / 'best.ckpt'}, which this command reads (--finetune {run / 'best.ckpt'}); "
        "choose another --out",
    )
    assert tree_digest(data, run) == before


def test_train_out_over_extra_candidates_is_refused(tmp_path, data):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    extra = run / "logs" / "hard.csv"  # where the run appends its log
    shutil.copy(data / "candidates.csv", extra)
    before = tree_digest(data, run)
    result = run_ct(
        "train-cls",
        "--extra-candidates",
        extra,
        "--out",
        run,
        "--data-root",
        data,
        "--epochs",
        1,
        "--epoch-size",
        8,
        "--batch-size",
        4,
        "--workers",
        0,
        "--device",
        "cpu",
    )
    _refused(
        result,
        f"--out {run} would overwrite {extra}, which this command reads (--extra-candidates {extra}); choose another --out",
    )
    assert tree_digest(data, run) == before


def test_hard_negatives_out_over_the_data_roots_candidates_is_refused(data, models):
    before = tree_digest(data, models["seg"].parent)
    target = data / "candidates.csv"
    result = run_ct(
        "hard-negatives", "--seg-model", models["seg"], "--out", target, "--data-root", data, "--device", "cpu"
    )
    _refused(result, f"--out {target} is a file this command reads (--data-root {data}); choose another --out")
    assert tree_digest(data, models["seg"].parent) == before


def test_hard_negatives_out_through_a_symlink_to_the_table_is_refused(tmp_path, data, models):
    link = tmp_path / "negatives.csv"
    link.symlink_to(data / "candidates.csv")
    before = tree_digest(data)
    result = run_ct(
        "hard-negatives", "--seg-model", models["seg"], "--out", link, "--data-root", data, "--device", "cpu"
    )
    _refused(result, f"--out {link} is a file this command reads (--data-root {data}); choose another --out")
    assert tree_digest(data) == before


def test_evaluate_plot_over_its_annotations_is_refused(tmp_path, data):
    folder = tmp_path / "eval"
    folder.mkdir()
    annotations = shutil.copy(data / "annotations.csv", folder / "annotations.csv")
    predictions = folder / "predictions.csv"
    predictions.write_text("seriesuid,coordX,coordY,coordZ,probability\n")
    before = tree_digest(folder)
    result = run_ct("evaluate", predictions, "--annotations", annotations, "--plot", folder / "." / "annotations.csv")
    _refused(
        result,
        f"--plot {folder / '.' / 'annotations.csv'} is a file this command reads (--annotations {annotations}); "
        "choose another --plot",
    )
    assert tree_digest(folder) == before


def test_models_import_book_over_its_source_is_refused(tmp_path):
    source = tmp_path / "book.state"
    source.write_bytes(b"the book's weights")
    hard_link = tmp_path / "same.state"
    hard_link.hardlink_to(source)
    result = run_ct("models", "import-book", source, "--kind", "seg", "-o", hard_link, "--force")
    _refused(result, f"--output {hard_link} is a file this command reads (SOURCE {source}); choose another --output")
    assert source.read_bytes() == b"the book's weights"


def _diagnosed(tmp_path, data, models):
    """A finished `ct diagnose --out` folder of two series, without its merged table."""
    out = tmp_path / "results"
    uids = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))[:2]
    done = run_ct(
        "diagnose", *uids, "--data-root", data, "--out", out, "--seg-model", models["seg"], "--cls-model", models["cls"]
    )
    assert done.exit_code == 0, done.output
    for name in ("findings.csv", "findings.csv.provenance"):
        (out / name).unlink()
    return out


def test_merge_writes_to_out_and_leaves_the_merged_folder_as_it_was(tmp_path, data, models):
    results = _diagnosed(tmp_path, data, models)
    before = tree_digest(results)
    other = tmp_path / "merged"
    merged = run_ct("merge", results, "--out", other)
    assert merged.exit_code == 0, merged.output
    assert merged.stdout.startswith(f"wrote {other / 'findings.csv'}: ")
    assert "candidates of 2 series" in merged.stdout
    assert tree_digest(results) == before
    rows = (other / "findings.csv").read_text().splitlines()
    assert rows[0] == "seriesuid,coordX,coordY,coordZ,probability" and len(rows) > 1
    assert sorted(p.name for p in other.iterdir()) == ["findings.csv", "findings.csv.provenance"]


def test_merge_csv_over_a_result_file_is_refused(tmp_path, data, models):
    results = _diagnosed(tmp_path, data, models)
    before = tree_digest(results)
    victim = sorted(results.glob("*.json"))[0]
    merged = run_ct("merge", results, "--csv", victim)
    _refused(merged, f"--csv {victim} is a file this command reads (DIR {results}); choose another --csv")
    assert tree_digest(results) == before


def test_compare_report_into_a_scans_dicom_folder_is_refused(tmp_path, models):
    prior, current = tmp_path / "prior", tmp_path / "current"
    write_dicom_series(phantom_chest(), phantom_geometry(), prior, "1.2.826.0.1.3680043.8.498.7101")
    write_dicom_series(phantom_chest(), phantom_geometry(), current, "1.2.826.0.1.3680043.8.498.7102")
    before = tree_digest(prior, current)
    first = sorted(p for p in prior.iterdir())[0]
    result = run_ct(
        "compare", prior, current, "--report", prior, "--seg-model", models["seg"], "--cls-model", models["cls"]
    )
    _refused(
        result,
        f"--report {prior} holds {first}, which this command reads (PRIOR {prior}); give --report a folder of its own",
    )
    assert tree_digest(prior, current) == before


def test_diagnose_csv_over_the_data_file_an_mhd_header_names_elsewhere_is_refused(tmp_path, data, models):
    """The .mhd's data file lies where its ElementDataFile says, not always beside it as <uid>.raw."""
    uid = sorted(p.stem for p in (data / "subset0").glob("*.mhd"))[0]
    header = tmp_path / "scans" / f"{uid}.mhd"
    (tmp_path / "pixels").mkdir()
    header.parent.mkdir()
    shutil.move(data / "subset0" / f"{uid}.raw", tmp_path / "pixels" / "volume.img")
    text = (data / "subset0" / f"{uid}.mhd").read_text()
    header.write_text(text.replace(f"ElementDataFile = {uid}.raw", "ElementDataFile = ../pixels/volume.img"))
    target = tmp_path / "pixels" / "volume.img"
    before = tree_digest(tmp_path / "scans", tmp_path / "pixels")
    result = run_ct("diagnose", header, "--csv", target, "--seg-model", models["seg"], "--cls-model", models["cls"])
    named = header.parent / "../pixels/volume.img"  # as the header names it
    _refused(result, f"--csv {target} is a file this command reads (SERIES {named}); choose another --csv")
    assert tree_digest(tmp_path / "scans", tmp_path / "pixels") == before
