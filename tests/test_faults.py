"""Faults: a command killed at a bad moment loses nothing that was done and leaves nothing corrupt.

The kills are real: the command runs as `python -m cli ...` in a subprocess and gets SIGKILL
(no clean-up runs) once it has finished part of its work; the re-run is then checked for what it
skipped, what it redid and what it produced. Two processes filling one cache at once and a
corrupt entry read by a fresh process are in tests/test_cache.py.

At the top level: the kills land in the cache, training, diagnosis and evaluation alike.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable

import numpy as np
import pytest

from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.catalog import open_catalog
from ct_pipeline.datasets.regions import SeriesRegions
from ct_pipeline.evaluation import read_findings
from ct_pipeline.loading import load_ct
from ct_pipeline.models import load_checkpoint
from ct_pipeline.prepcache import PrepcacheConfig, key_for, prepcache
from tests.helpers.cli_process import run_ct, start_cli, wait_until, words
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.tiny_luna import SERIES, coded_volume, write_tiny_luna
from tests.helpers.training_data import write_training_luna

N_SERIES = 12


_start = start_cli


def _kill_when(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGKILL ``process`` as soon as ``condition()`` holds; fail if it ended or never got there."""
    wait_until(condition, process, "the kill point", timeout_s)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "killed while still working, not after it finished"


@pytest.mark.slow
def test_prepcache_killed_midway_resumes_without_recomputing_and_leaves_no_corrupt_entry(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=N_SERIES, nodules_per_series=1, negatives_per_series=2)
    cache_dir = tmp_path / "cache"
    args = ["prepcache", "--data-root", root, "--cache-dir", cache_dir]
    victim = _start(tmp_path, *args)
    watcher = CropCache(cache_dir)  # a second process's view, as during a concurrent run
    _kill_when(lambda: watcher.stats()["regions"] >= 1, victim)  # at least one series is complete
    watcher.close()

    catalog = open_catalog([root], cache_dir)
    keys = {uid: key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec()) for uid in catalog.series_uids}
    cache = CropCache(cache_dir)
    done = {uid for uid, key in keys.items() if cache.contains(key)}
    cache.close()
    assert 1 <= len(done) < N_SERIES, "the kill came after the last series"

    rerun = run_ct(*args)
    assert rerun.exit_code == 0, rerun.output
    summary = f"{N_SERIES} series (shard 0/1): {N_SERIES - len(done)} filled, {len(done)} already cached"
    assert summary in words(rerun.stdout)
    cache = CropCache(cache_dir)
    try:
        assert cache.stats()["regions"] == N_SERIES
        for uid, key in keys.items():
            region = cache.get(key)  # verifies the checksum
            assert region is not None, uid
            hu = load_ct(root / "subset0" / f"{uid}.mhd").hu
            (i, r, c), shape = region.origin_irc, region.hu.shape
            assert np.array_equal(region.hu, hu[i : i + shape[0], r : r + shape[1], c : c + shape[2]]), uid
    finally:
        cache.close()


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_from_its_last_complete_checkpoint(tmp_path):
    root = write_training_luna(tmp_path / "luna", n_series=4)
    out = tmp_path / "run"
    args = [
        "train-cls",
        "--data-root",
        root,
        "--out",
        out,
        "--epochs",
        "2",
        "--epoch-size",
        "8",
        "--batch-size",
        "8",
        "--val-stride",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--seed",
        "3",
    ]
    victim = _start(tmp_path, *args)
    _kill_when(lambda: (out / "last.ckpt").exists(), victim)  # epoch 1 is saved; epoch 2 is running

    survived = load_checkpoint(out / "last.ckpt", "cls")  # whole: loads, and is a complete epoch
    assert (survived.epoch, survived.samples_seen) == (1, 8)
    assert {p.name for p in out.glob("*.ckpt")} <= {"best.ckpt", "last.ckpt"}  # the kill may precede best.ckpt

    resumed = run_ct(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {out} after epoch {survived.epoch}" in resumed.output
    final = load_checkpoint(out / "last.ckpt", "cls")
    assert (final.epoch, final.samples_seen) == (2, 16)


@pytest.mark.slow
def test_diagnose_batch_killed_midway_skips_the_finished_series_and_redoes_the_rest(tmp_path):
    root = tmp_path / "luna"
    uids = write_phantom_luna(root, 6)
    models = write_models(tmp_path / "models")
    out = tmp_path / "out"
    args = [
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
        "1",
    ]
    victim = _start(tmp_path, *args)
    _kill_when(lambda: any(out.glob("1.*.json")), victim)

    finished = sorted(out.glob("1.*.json"))
    assert 1 <= len(finished) < 6
    for path in finished:  # every result file there is whole
        assert json.loads(path.read_text())["series_uid"] == path.name.removesuffix(".json")
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}

    rerun = run_ct(*args)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stderr.count("skipped ") == len(finished)
    assert {p.name: p.stat().st_mtime_ns for p in finished} == stamps  # not redone
    assert sorted(p.name for p in out.glob("1.*.json")) == sorted(f"{uid}.json" for uid in uids)
    table = read_findings(out / "findings.csv")  # the merged CSV: every series, 2 nodules each
    assert sorted(set(table.series_uid)) == uids and len(table) == 12


def test_corrupt_cache_entry_is_detected_logged_and_recomputed_when_training_reads_it(tmp_path, caplog):
    root = write_tiny_luna(tmp_path / "luna")
    cache_dir = tmp_path / "cache"
    catalog = open_catalog([root], cache_dir)
    cache = CropCache(cache_dir)
    prepcache(catalog, cache, PrepcacheConfig())  # (not the CLI: its logging set-up would replace caplog's handler)
    regions = SeriesRegions(catalog, cache, SERIES, RegionSpec())
    path = cache.data_path(regions.key(SERIES[1]))
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x55  # one damaged byte in the voxels
    path.write_bytes(bytes(blob))
    with caplog.at_level("WARNING"):
        region = regions.region(SERIES[1])  # what the training datasets call
    warning = f"cache entry for series {SERIES[1]} is corrupt (checksum mismatch); deleting it, it will be recomputed"
    assert warning in caplog.text
    assert np.array_equal(region.crop((20, 32, 32), (3, 3, 3)), coded_volume(1)[19:22, 31:34, 31:34])
    cache.close()
    fresh = CropCache(cache_dir)  # the recomputed entry is on disk and passes the checksum
    assert fresh.get(regions.key(SERIES[1])) is not None
    fresh.close()


def test_cache_dir_on_a_network_file_system_is_warned_about(tmp_path, monkeypatch):
    root = write_tiny_luna(tmp_path / "luna")
    monkeypatch.setattr("ct_pipeline.paths.filesystem_type", lambda path, mounts_file=None: "nfs4")
    result = run_ct("prepcache", "--data-root", root, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert (
        f"WARNING: cache dir {tmp_path / 'cache' / 'crops'} is on a nfs4 file system: diskcache's SQLite is not safe "
        "there; use node-local disk, e.g. CT_CACHE_DIR=$TMPDIR/ct-cache"
    ) in result.stderr
