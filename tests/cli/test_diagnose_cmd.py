"""`ct diagnose` through the CLI: outputs, reports, batches that resume and survive failures, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.evaluation import read_findings
from ct_pipeline.loading.mhd import write_mhd
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import NODULES_IRC, phantom_chest, phantom_geometry, write_models

UID = "1.2.826.0.1.3680043.8.498.7001"


def _run(*args):
    return run_ct("diagnose", *args)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = write_models(tmp_path_factory.mktemp("models"), nodule_prob=0.8, malignancy_prob=0.6)
    return ["--seg-model", paths["seg"], "--cls-model", paths["cls"], "--concurrent-batches", "1"]


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / 'scan <b>&"x"'
    write_dicom_series(phantom_chest(), phantom_geometry(), folder, UID)
    return folder


@pytest.fixture()
def luna_root(tmp_path):
    """Three phantom series in the LUNA16 layout, and one whose .raw is truncated."""
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    uids = [f"1.2.826.0.1.3680043.8.498.{k}" for k in (11, 12, 13)]
    for uid in uids:
        write_mhd(phantom_chest(), phantom_geometry(), root / "subset0" / f"{uid}.mhd")
    broken = root / "subset0" / "1.2.826.0.1.3680043.8.498.99.mhd"
    write_mhd(phantom_chest(), phantom_geometry(), broken)
    raw = broken.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:1000])
    return root, uids


def test_json_line_per_series_with_every_candidate(models, dicom_dir):
    result = _run(dicom_dir, *models, "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["series_uid"] == UID
    assert sorted(tuple(c["center_irc"]) for c in record["candidates"]) == sorted(NODULES_IRC)
    for candidate in record["candidates"]:
        assert set(candidate) >= {"center_xyz", "center_irc", "diameter_mm", "nodule_prob", "malignancy_prob"}
        assert candidate["malignancy_prob"] is None  # no --mal-model
        assert candidate["nodule_prob"] == pytest.approx(0.8, abs=4e-3)  # bf16 on CPUs that have it: 8 bits
        np.testing.assert_allclose(
            candidate["center_xyz"], phantom_geometry().irc_to_xyz(candidate["center_irc"]), atol=1e-3
        )
    assert set(record["timings_s"]) >= {"load", "segmentation", "grouping", "classification", "merge"}


def test_progress_is_a_line_per_stage_on_stderr_unless_quiet(models, luna_root):
    root, uids = luna_root
    shown = _run(*uids[:2], "--data-root", root, *models, "--json")
    assert shown.exit_code == 0, shown.output
    assert len(shown.stdout.strip().splitlines()) == 2  # stdout stays the JSON lines
    assert (
        f"[1/2] {uids[0]}: segmentation (" in shown.stderr
        and f"[2/2] {uids[1]}: classification (2 candidates)" in shown.stderr
    )
    stages = [line.split(": ", 1)[1].split(" ")[0] for line in shown.stderr.splitlines() if line.startswith("[1/2]")]
    assert stages == ["load", "lung_region", "segmentation", "grouping", "classification", "merge"]
    quiet = _run(*uids[:2], "--data-root", root, *models, "--json", "--quiet")
    assert quiet.exit_code == 0 and "[1/2]" not in quiet.stderr and "[2/2]" not in quiet.stderr
    found = [[c["center_irc"] for c in json.loads(line)["candidates"]] for line in quiet.stdout.splitlines()]
    assert found == [[c["center_irc"] for c in json.loads(line)["candidates"]] for line in shown.stdout.splitlines()]


def test_console_table_csv_and_report(models, dicom_dir, tmp_path):
    csv_path, report = tmp_path / "findings.csv", tmp_path / "report"
    result = _run(dicom_dir, *models, "--csv", csv_path, "--report", report, "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    assert f"series {UID}: 2 finding(s) at nodule probability >= 0.5" in result.stdout
    assert "time: load" in result.stdout and "classification" in result.stdout
    assert csv_path.read_text().splitlines()[0] == "seriesuid,coordX,coordY,coordZ,probability"
    table = read_findings(csv_path)
    assert len(table) == 2 and set(table.series_uid) == {UID}
    page = (report / "index.html").read_text()
    assert "Research software, not a medical device" in page
    assert "scan &lt;b&gt;&amp;&quot;x&quot;" in page and "<b>&" not in page  # the folder name, escaped
    pictures = sorted(p.name for p in (report / UID).iterdir())
    assert pictures == ["finding_01.png", "finding_02.png", "overview.png"]
    assert all((report / UID / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pictures)


def test_threshold_above_every_probability_lists_nothing_but_keeps_the_csv(models, dicom_dir, tmp_path):
    result = _run(dicom_dir, *models, "--threshold", "0.9", "--csv", tmp_path / "f.csv")
    assert result.exit_code == 0, result.output
    assert "0 finding(s)" in result.stdout and "2 more candidate(s) below the threshold" in result.stdout
    assert len(read_findings(tmp_path / "f.csv")) == 2


def test_batch_reports_a_failure_goes_on_and_resumes(models, luna_root, tmp_path):
    root, uids = luna_root
    out = tmp_path / "out"
    first = _run("--all", "--data-root", root, "--out", out, *models, "--json")
    assert first.exit_code == 3, first.output
    assert "failed 1.2.826.0.1.3680043.8.498.99:" in first.stderr
    assert "1 of 4 series failed" in first.stderr
    records = [json.loads(line) for line in first.stdout.strip().splitlines()]
    assert sorted(r["series_uid"] for r in records) == uids
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{uid}.json" for uid in uids)
    assert len(read_findings(out / "findings.csv")) == 6
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    again = _run("--all", "--data-root", root, "--out", out, *models)
    assert again.exit_code == 3
    assert again.stderr.count("skipped ") == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps  # nothing redone


def test_shards_split_the_series_and_merge_gathers_them(models, luna_root, tmp_path):
    root, uids = luna_root
    listing = tmp_path / "series.txt"
    listing.write_text("# the good ones\n" + "\n".join(uids) + "\n\n")
    out = tmp_path / "out"
    done = []
    for shard in ("0/2", "1/2"):
        result = _run("--series-file", listing, "--data-root", root, "--out", out, "--shard", shard, *models, "--json")
        assert result.exit_code == 0, result.output
        done.append({json.loads(line)["series_uid"] for line in result.stdout.strip().splitlines()})
        assert (out / f"findings.shard-{shard[0]}-of-2.csv").is_file()
    assert done[0] and done[1] and not (done[0] & done[1]) and done[0] | done[1] == set(uids)
    merged = run_ct("merge", str(out), "--csv", str(tmp_path / "all.csv"))
    assert merged.exit_code == 0, merged.output
    assert merged.stdout.strip() == f"wrote {tmp_path / 'all.csv'}: 6 candidates of 3 series"
    assert sorted(set(read_findings(tmp_path / "all.csv").series_uid)) == uids


def test_wrong_modality_fails_that_series_only(models, dicom_dir, tmp_path):
    mr = tmp_path / "mr"
    write_dicom_series(phantom_chest(), phantom_geometry(), mr, "1.2.826.0.1.3680043.8.498.8001", modality="MR")
    result = _run(dicom_dir, mr, *models)
    assert result.exit_code == 3
    assert "failed " in result.stderr and "modality MR, not CT" in result.stderr
    assert f"series {UID}: 2 finding(s)" in result.stdout


def test_evaluate_prints_the_confusion_table(models, luna_root, tmp_path):
    root, uids = luna_root
    geometry = phantom_geometry()
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool"]
    for uid in uids:
        for k, center in enumerate(NODULES_IRC):
            x, y, z = geometry.irc_to_xyz(center)
            rows.append(f"{uid},{x},{y},{z},6.4,{'True' if k == 0 else 'False'}")
    annotations = tmp_path / "annotations_with_malignancy.csv"
    annotations.write_text("\n".join(rows) + "\n")
    mal = write_models(tmp_path / "mal", nodule_prob=0.8, malignancy_prob=0.6)["mal"]
    result = _run(
        *uids[:2],
        "--data-root",
        root,
        *models,
        "--mal-model",
        mal,
        "--evaluate",
        "--annotations",
        annotations,
        "--json",
    )
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout.strip().splitlines()[-1])["evaluation"]
    # every nodule found and called malignant (malignancy 0.6 >= 0.5): 2 malignant, 2 benign nodules;
    # the third series' annotations are not counted (not diagnosed)
    assert evaluation["total"]["malignant"]["predicted malignant"] == 2
    assert evaluation["total"]["benign"]["predicted malignant"] == 2
    assert evaluation["total"]["malignant"]["complete miss"] == 0
    assert evaluation["total"]["non-nodule"]["predicted benign"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--seg-model", "{cls}", "--cls-model", "{cls}"],
            "is a nodule classifier checkpoint (kind 'cls'), but --seg-model needs",
        ),
        (["--cls-model", "{cls}", "--runs-dir", "{empty}"], "no segmentation checkpoint found under"),
        (["--seg-model", "{seg}", "--cls-model", "{tmp}/missing.ckpt"], "--cls-model {tmp}/missing.ckpt: no such file"),
        (["--seg-model", "{seg}", "--cls-model", "{cls}", "--shard", "3/2"], "--shard '3/2'"),
        (["--seg-model", "{seg}", "--cls-model", "{cls}", "--tta", "3"], "--tta 3 is not one of 1, 2, 4, 8"),
        (
            ["--seg-model", "{seg}", "--cls-model", "{cls}", "--merge", "{tmp}"],
            "ct diagnose --merge is now its own command: ct merge {tmp} (same --csv, --out, --allow-mixed, --evaluate)",
        ),
    ],
    ids=["classifier-as-seg-model", "no-default-checkpoint", "missing-file", "bad-shard", "bad-tta", "merge-moved"],
)
def test_bad_input_exits_2_with_one_line(args, message, models, dicom_dir, tmp_path):
    paths = {"seg": models[1], "cls": models[3], "tmp": tmp_path, "empty": tmp_path / "runs"}
    filled = [a.format(**paths) for a in args]
    result = _run(dicom_dir, *filled)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message.format(**paths) in lines[0]


def test_nothing_to_diagnose_exits_2(models):
    result = _run(*models)
    assert result.exit_code == 2
    assert "nothing to diagnose" in result.stderr


def test_empty_segmentation_reports_zero_findings_and_exits_0(dicom_dir, tmp_path):
    from ct_pipeline.models import save_checkpoint
    from tests.helpers.diagnosis_tiny import constant_classifier, threshold_unet

    save_checkpoint(tmp_path / "seg.ckpt", threshold_unet(level_hu=900.0), kind="seg")  # nothing is that bright
    save_checkpoint(tmp_path / "cls.ckpt", constant_classifier(0.9), kind="cls")
    result = _run(dicom_dir, "--seg-model", tmp_path / "seg.ckpt", "--cls-model", tmp_path / "cls.ckpt", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["candidates"] == [] and record["n_candidates_before_merge"] == 0


def test_max_candidates_classifies_the_best_k_and_refuses_a_negative_budget(models, dicom_dir):
    result = _run(dicom_dir, *models, "--json", "--max-candidates", "1")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert len(record["candidates"]) == 1 and tuple(record["candidates"][0]["center_irc"]) in NODULES_IRC
    assert record["n_candidates_before_merge"] == 1 and record["n_not_classified"] == 1
    assert record["provenance"]["settings"]["max_candidates"] == 1
    refused = _run(dicom_dir, *models, "--max-candidates", "-1")
    assert refused.exit_code == 2 and "--max-candidates" in refused.output


def test_tta_is_recorded_and_a_result_made_without_it_is_diagnosed_again(models, dicom_dir, tmp_path):
    out = tmp_path / "out"
    first = _run(dicom_dir, *models, "--out", out)
    assert first.exit_code == 0, first.output
    (path,) = out.glob("*.json")
    assert json.loads(path.read_text())["provenance"]["settings"]["classifier_flips"] == 1
    assert _run(dicom_dir, *models, "--out", out, "--tta", "1").stderr.count("skipped ") == 1
    again = _run(dicom_dir, *models, "--out", out, "--tta", "4")
    assert again.exit_code == 0, again.output
    (redid,) = [line for line in again.stderr.splitlines() if line.startswith("redid ")]
    assert redid.endswith(f": {path} was made with another classifier_flips; diagnosing it again")
    record = json.loads(path.read_text())
    assert record["provenance"]["settings"]["classifier_flips"] == 4
    # the hand-set classifier gives 0.8 for every crop, so for every mirror of it too
    assert [c["nodule_prob"] for c in record["candidates"]] == pytest.approx([0.8, 0.8], abs=4e-3)  # bf16: 8 bits
