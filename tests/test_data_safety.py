"""Nothing lost, nothing stale: bad files and faults, through the CLI as a user meets them.

Each case asserts the exit code, the one-line message and that no file outside the command's own
outputs changed.

At the top level, not in a package's folder: its cases cross every stage (loading, the cache,
training, diagnosis, evaluation), each reached through its command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ct_pipeline import __version__
from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.catalog import open_catalog
from ct_pipeline.errors import OutputError
from ct_pipeline.loading.fingerprint import sha256_of_file
from ct_pipeline.models import LunaClassifier, save_checkpoint
from ct_pipeline.prepcache import key_for
from tests.helpers.cli_process import error_line, run_ct, words
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.training_data import series_uid, write_training_luna


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and mtime: what 'nothing else changed' compares."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


# -- ct synth --overwrite ------------------------------------------------------------------------


def _synth(out: Path, *extra: object):
    return run_ct("synth", out, "--series", 2, "--size", "small", "--seed", 1, *extra)


def test_synth_overwrite_replaces_its_own_data_set(tmp_path):
    out = tmp_path / "data"
    assert _synth(out).exit_code == 0
    first = sorted(p.name for p in (out / "subset0").iterdir())
    result = run_ct("synth", out, "--series", 1, "--size", "small", "--seed", 2, "--overwrite")
    assert result.exit_code == 0, result.output
    second = sorted(p.name for p in (out / "subset0").iterdir())
    assert len(second) == 2 and not set(second) & set(first)  # the earlier series are gone


@pytest.mark.parametrize("fault", ["foreign series", "edited annotations", "no manifest"])
def test_synth_overwrite_refuses_a_folder_with_files_it_did_not_write_and_deletes_nothing(tmp_path, fault):
    out = tmp_path / "data"
    assert _synth(out).exit_code == 0
    if fault == "foreign series":  # a real LUNA16 series beside ours
        named = out / "subset0" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860.mhd"
        named.write_text("ObjectType = Image\n")
        message = f"--overwrite: {named} was not written by ct synth; nothing was deleted"
    elif fault == "edited annotations":  # a real annotations.csv copied over ours
        named = out / "annotations.csv"
        named.write_text(named.read_text() + "1.2.3,1,2,3,4\n")
        message = f"--overwrite: {named} changed since ct synth wrote it; nothing was deleted"
    else:
        (out / ".ct-synth-manifest.json").unlink()
        message = f"--overwrite: {out} was not written by ct synth (no .ct-synth-manifest.json)"
    before = _snapshot(out)

    result = _synth(out, "--overwrite")

    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {message}")
    assert _snapshot(out) == before


# -- one bad file never stops everything -----------------------------------------------------------


def test_a_random_bytes_dcm_is_skipped_with_a_warning_and_the_other_series_stay_usable(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=2)
    bad = root / "junk" / "noise.dcm"
    bad.parent.mkdir()
    bad.write_bytes(np.random.default_rng(0).bytes(4096))

    listed = run_ct("series", "list", "--data-root", root, "--cache-dir", tmp_path / "cache")
    assert listed.exit_code == 0, listed.output
    assert re.search(
        r"WARNING: skipped 1 unreadable DICOM file \(corrupt, truncated or not DICOM\): .*noise\.dcm",
        words(listed.stderr),
    )
    assert series_uid(0) in words(listed.stdout).replace(" ", "") or series_uid(0)[:20] in listed.stdout
    info = run_ct("info", series_uid(1), "--data-root", root, "--cache-dir", tmp_path / "cache")
    assert info.exit_code == 0, info.output
    folder = run_ct("info", bad.parent)
    assert folder.exit_code == 2
    assert "noise.dcm: unreadable DICOM file" in error_line(folder)


def _truncate_raw(root: Path, n: int) -> str:
    uid = series_uid(n)
    raw = root / "subset0" / f"{uid}.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    return uid


@pytest.mark.parametrize("workers", [1, 2])
def test_prepcache_goes_on_past_a_truncated_raw_and_ends_with_exit_3(tmp_path, workers):
    root = write_training_luna(tmp_path / "luna", n_series=4)
    bad = _truncate_raw(root, 1)
    cache_dir = tmp_path / "cache"
    log = tmp_path / "prepcache.log"

    result = run_ct("prepcache", "--data-root", root, "--cache-dir", cache_dir, "--workers", workers, "--log-file", log)

    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines()[-1] == f"1 of 4 series failed: {bad}; the others are cached"
    catalog = open_catalog([root], cache_dir)
    cache = CropCache(cache_dir)
    cached = {
        uid
        for uid in catalog.series_uids
        if cache.contains(key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec()))
    }
    cache.close()
    assert cached == set(catalog.series_uids) - {bad}
    assert log.read_text().splitlines()[-1].endswith("end: 1 of 4 series failed")


def test_training_refuses_unreadable_series_at_start_and_runs_without_them_when_excluded(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=6)
    bad = _truncate_raw(root, 1)
    out = tmp_path / "run"
    args = (
        "train-cls",
        "--data-root",
        root,
        "--cache-dir",
        tmp_path / "cache",
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

    refused = run_ct(*args, "--out", out)

    assert refused.exit_code == 2, refused.output
    listing = out / "unreadable-series.txt"
    assert error_line(refused).startswith(f"error: 1 series cannot be read, so training does not start: {bad} (")
    assert error_line(refused).endswith(f"leave them out with --exclude-series {listing} (their UIDs, one per line)")
    assert listing.read_text() == f"{bad}\n"
    assert not (out / "last.ckpt").exists()

    # the same --out again (it holds only logs/ and the listing), leaving the bad series out
    excluded = run_ct(*args, "--out", out, "--exclude-series", listing)
    assert excluded.exit_code == 0, excluded.output
    assert (out / "last.ckpt").exists()


def test_a_validation_split_without_a_nodule_is_refused_at_start(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=4)
    _, val = open_catalog([root]).split(2)
    # the validation series keep their non-nodule candidates only
    candidates = (root / "candidates.csv").read_text().splitlines()
    kept = [line for line in candidates if not (line.endswith(",1") and line.split(",")[0] in val)]
    assert len(kept) < len(candidates)
    (root / "candidates.csv").write_text("\n".join(kept) + "\n")
    for name in ("annotations.csv", "annotations_with_malignancy.csv"):
        lines = (root / name).read_text().splitlines()
        (root / name).write_text("\n".join(line for line in lines if line.split(",")[0] not in val) + "\n")
    result = run_ct(
        "train-cls",
        "--data-root",
        root,
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        "--epoch-size",
        16,
        "--val-stride",
        2,
        "--workers",
        0,
    )
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "error: the validation split (every 2-th series: 2 series) holds no nodule candidate, so validation "
        "cannot be scored and no best.ckpt chosen; change --val-stride or add series"
    )


# -- the crop cache ------------------------------------------------------------------------------


def _filled_cache(tmp_path: Path) -> tuple[Path, Path]:
    root = write_training_luna(tmp_path / "luna", n_series=3)
    cache_dir = tmp_path / "cache"
    assert run_ct("prepcache", "--data-root", root, "--cache-dir", cache_dir).exit_code == 0
    return root, cache_dir


def test_a_deleted_data_file_is_a_corrupt_entry_that_prepcache_and_training_refill(tmp_path):
    root, cache_dir = _filled_cache(tmp_path)
    catalog = open_catalog([root], cache_dir)
    uid = catalog.series_uids[0]
    cache = CropCache(cache_dir)
    key = key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec())
    path = cache.data_path(key)
    cache.close()
    path.unlink()  # what a $TMPDIR cleaner does

    again = run_ct("prepcache", "--data-root", root, "--cache-dir", cache_dir)
    assert again.exit_code == 0, again.output
    assert "1 filled, 2 already cached" in words(again.stdout)
    cache = CropCache(cache_dir)
    path = cache.data_path(key)
    path.unlink()
    cache.close()
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


def test_partial_data_files_are_counted_by_info_and_removed_by_clear(tmp_path):
    _, cache_dir = _filled_cache(tmp_path)
    leftover = cache_dir / "crops" / "ab" / "cd" / "0123456789abcdef0123456789ab.val.partial"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\0" * 2048)  # what a kill -9 in the middle of a write leaves

    info = run_ct("cache", "info", "--cache-dir", cache_dir)
    assert info.exit_code == 0
    assert "; 1 partial files (0.0 MiB) of fills that did not finish" in words(info.stdout)
    cleared = run_ct("cache", "clear", "--cache-dir", cache_dir, "--yes")
    assert cleared.exit_code == 0
    assert not leftover.exists()
    assert words(run_ct("cache", "info", "--cache-dir", cache_dir).stdout).startswith(
        f"{cache_dir / 'crops'}: 0 series"
    )


def test_cache_clear_answered_no_keeps_everything_and_without_a_terminal_needs_yes(tmp_path):
    _, cache_dir = _filled_cache(tmp_path)
    before = _snapshot(cache_dir)
    no = run_ct("cache", "clear", "--cache-dir", cache_dir, input="n\n")
    # CliRunner's stdin is no terminal: without --yes that is a refusal, not a question
    assert no.exit_code == 2
    assert error_line(no) == (
        f"error: ct cache clear would delete everything in {cache_dir / 'crops'}; add --yes to confirm without a terminal"
    )
    assert {k: v for k, v in _snapshot(cache_dir).items() if not k.startswith("crops/locks")} == {
        k: v for k, v in before.items() if not k.startswith("crops/locks")
    }


def test_the_data_file_is_written_under_a_partial_name_then_renamed(tmp_path, monkeypatch):
    import diskcache

    seen: list[str] = []
    original = diskcache.Disk._write

    def spy(self, full_path, iterator, mode, encoding=None):
        seen.append(full_path)
        return original(self, full_path, iterator, mode, encoding)

    monkeypatch.setattr(diskcache.Disk, "_write", spy)
    _filled_cache(tmp_path)
    assert seen and all(path.endswith(".val.partial") for path in seen)
    assert not list((tmp_path / "cache" / "crops").rglob("*.partial"))


# -- checkpoints and training that diverges ----------------------------------------------------------


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tmp_path):
    model = LunaClassifier()
    with torch.no_grad():
        model.block1.conv1.weight[0, 0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.ckpt", model, kind="cls")
    result = run_ct("models", "info", path)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {path} has 1 non-finite (NaN or infinite) values in block1.conv1.weight: the training that wrote "
        "it diverged; use an earlier checkpoint (e.g. best.ckpt) or retrain with a lower --lr."
    )


def test_a_diverging_run_stops_at_the_first_non_finite_loss_with_exit_2(tmp_path):
    root = write_training_luna(tmp_path / "luna")
    out = tmp_path / "run"
    result = run_ct(
        "train-cls",
        "--data-root",
        root,
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out,
        "--epochs",
        3,
        "--epoch-size",
        64,
        "--batch-size",
        8,
        "--val-stride",
        3,
        "--workers",
        0,
        "--lr",
        10,
    )
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert re.match(
        r"error: training diverged at epoch \d+, step \d+: the loss is (nan|inf); the learning rate \(--lr 10\)", line
    )
    assert "Traceback" not in result.output and "histogram" not in result.output.lower()
    for name in ("last.ckpt", "best.ckpt"):  # whatever was saved holds finite weights
        if (out / name).exists():
            assert run_ct("models", "info", out / name).exit_code == 0


# -- diagnose: provenance, stale results, early refusals ---------------------------------------------


@pytest.fixture()
def diagnose_setup(tmp_path):
    root = tmp_path / "luna"
    uids = write_phantom_luna(root, 2, first=70)
    models = write_models(tmp_path / "models", nodule_prob=0.8)
    other = write_models(tmp_path / "other", nodule_prob=0.3)
    return root, uids, models, other


def _diagnose(root, models, out, *extra):
    return run_ct(
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
        *extra,
    )


def test_results_record_what_made_them_and_a_rerun_redoes_only_what_was_made_differently(diagnose_setup, tmp_path):
    root, uids, models, other = diagnose_setup
    out = tmp_path / "out"
    first = _diagnose(root, models, out)
    assert first.exit_code == 0, first.output
    assert f"using --seg-model {models['seg']} --cls-model {models['cls']}" in first.stderr
    record = json.loads((out / f"{uids[0]}.json").read_text())["provenance"]
    assert record["ct_version"] == __version__
    assert record["models"]["cls"]["sha256"] == sha256_of_file(models["cls"])
    assert record["settings"]["nodule_threshold"] == 0.5 and record["settings"]["device_type"] == "cpu"
    assert record["source_fingerprint"]
    side = json.loads((out / "findings.csv.provenance").read_text())
    assert [way["series"] for way in side["made_with"]] == [uids]

    repeat = _diagnose(root, models, out)
    assert repeat.stderr.count("skipped ") == 2 and "redid" not in repeat.stderr

    changed = _diagnose(root, {**models, "cls": other["cls"]}, out, "--threshold", 0.1)
    assert changed.exit_code == 0, changed.output
    redone = [line for line in changed.stderr.splitlines() if line.startswith("redid ")]
    assert len(redone) == 2
    assert redone[0] == (
        f"redid {uids[0]}: {out / (uids[0] + '.json')} was made with another the cls model, nodule_threshold; "
        "diagnosing it again"
    )
    assert json.loads((out / f"{uids[0]}.json").read_text())["provenance"]["settings"]["nodule_threshold"] == 0.1


def test_merge_refuses_results_made_with_different_models_unless_allowed(diagnose_setup, tmp_path):
    root, uids, models, other = diagnose_setup
    out = tmp_path / "out"
    assert _diagnose(root, models, out, "--series-file", _series_file(tmp_path, uids[:1])).exit_code == 0
    # the other series with the other classifier, as a second array task might have run it
    second = run_ct(
        "diagnose",
        uids[1],
        "--data-root",
        root,
        "--out",
        out,
        "--seg-model",
        models["seg"],
        "--cls-model",
        other["cls"],
        "--concurrent-batches",
        1,
    )
    assert second.exit_code == 0, second.output
    before = _snapshot(out)

    refused = run_ct("merge", out)
    assert refused.exit_code == 2
    assert error_line(refused) == (
        f"error: ct merge: {out} holds results made in 2 different ways ({uids[0]} and {uids[1]} differ in the cls "
        "model); re-run ct diagnose with one set of models and options, or pass --allow-mixed to merge them anyway"
    )
    assert _snapshot(out) == before
    assert run_ct("merge", out, "--allow-mixed").exit_code == 0


def _series_file(tmp_path: Path, uids: list[str]) -> Path:
    path = tmp_path / "series.txt"
    path.write_text("".join(f"{uid}\n" for uid in uids))
    return path


def test_a_batch_with_a_failed_series_ends_its_log_with_the_count(diagnose_setup, tmp_path):
    root, uids, models, _ = diagnose_setup
    raw = root / "subset0" / f"{uids[1]}.raw"
    raw.write_bytes(raw.read_bytes()[:500])
    out = tmp_path / "out"
    result = _diagnose(root, models, out)
    assert result.exit_code == 3
    assert (out / "logs" / "diagnose.log").read_text().splitlines()[-1].endswith("end: 1 of 2 series failed")


def test_a_bad_series_argument_is_refused_before_any_model_loads(tmp_path):
    # the model paths do not exist: the UID must be refused first
    result = run_ct("diagnose", "1.2/../x", "--seg-model", tmp_path / "no.ckpt", "--cls-model", tmp_path / "no.ckpt")
    assert result.exit_code == 2
    assert "1.2/../x" in error_line(result) and "no such file" not in error_line(result)


def test_an_empty_folder_is_named_as_holding_no_dicom(tmp_path):
    models = write_models(tmp_path / "models")
    (tmp_path / "empty").mkdir()
    result = run_ct("diagnose", tmp_path / "empty", "--seg-model", models["seg"], "--cls-model", models["cls"])
    assert result.exit_code == 3 or result.exit_code == 2
    assert f"{tmp_path / 'empty'}: no DICOM files in this folder (or below it)" in result.stderr


@pytest.mark.parametrize("option", ["--csv", "--report", "--out"])
def test_an_unwritable_output_is_refused_before_the_work_with_the_path_and_reason(diagnose_setup, tmp_path, option):
    root, uids, models, _ = diagnose_setup
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / ("findings.csv" if option == "--csv" else "dir")
    result = run_ct(
        "diagnose",
        uids[0],
        "--data-root",
        root,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        option,
        target,
    )
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {option} {target}: cannot write there (a part of the path is a file, not a folder); free space, "
        "fix the permissions or choose another path"
    )
    assert "using --seg-model" not in result.stderr  # refused before the models were loaded


def test_a_full_disk_while_writing_is_exit_2_naming_the_file(tmp_path, monkeypatch):
    import errno

    from ct_pipeline import atomic

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    model = LunaClassifier()
    with pytest.raises(OutputError, match=r"cannot write there \(no space left on the device\)"):
        save_checkpoint(tmp_path / "m.ckpt", model, kind="cls")
    assert not list(tmp_path.iterdir())  # no temporary file left


def test_two_prepcache_runs_at_once_fill_each_series_once(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=6)
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    logs = [tmp_path / f"p{k}.log" for k in range(2)]
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "prepcache",
                "--data-root",
                str(root),
                "--cache-dir",
                str(cache_dir),
                "--log-file",
                str(log),
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for log in logs
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    filled = [line for log in logs for line in log.read_text().splitlines() if " filled 1." in line]
    assert len(filled) == 6  # each series read by one of the two, the other found it cached


@pytest.mark.parametrize("command", ["synth", "import-book", "evaluate --plot", "prepcache --cache-dir"])
def test_every_output_option_under_a_file_is_exit_2_with_the_path_and_reason(tmp_path, command, book_weights_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "out"
    if command == "synth":
        args, named = ["synth", target, "--series", 1, "--size", "small"], f"output folder {target}"
    elif command == "import-book":
        source = book_weights_dir / "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"
        args, named = ["models", "import-book", source, "--kind", "cls", "-o", target], f"--output {target}"
    elif command == "evaluate --plot":
        predictions = tmp_path / "p.csv"
        predictions.write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2.3,0,0,0,0.9\n")
        annotations = tmp_path / "a.csv"
        annotations.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,0,0,0,5\n")
        args, named = ["evaluate", predictions, "--annotations", annotations, "--plot", target], f"--plot {target}"
    else:
        root = write_training_luna(tmp_path / "luna", n_series=1)
        args, named = ["prepcache", "--data-root", root, "--cache-dir", target], f"--cache-dir {target}"
    result = run_ct(*args)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {named}: cannot write there (a part of the path is a file, not a folder); free space, fix the "
        "permissions or choose another path"
    )
    assert blocker.read_text() == "not a folder"


def test_the_report_page_says_what_made_the_findings(diagnose_setup, tmp_path):
    root, uids, models, _ = diagnose_setup
    report = tmp_path / "report"
    result = run_ct(
        "diagnose",
        uids[0],
        "--data-root",
        root,
        "--seg-model",
        models["seg"],
        "--cls-model",
        models["cls"],
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    page = (report / "index.html").read_text()
    assert f"Made with ct {__version__}" in page
    assert f"cls: cls.ckpt (sha256 {sha256_of_file(models['cls'])[:12]})" in page
    assert "nodule_threshold 0.5" in page
