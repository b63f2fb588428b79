"""`ct diagnose` as an array job: two shards run at the same time into one --out folder, each with its
own log file; ct merge gathers every series exactly once; a re-run of a task redoes only what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ct_pipeline.evaluation import read_findings
from ct_pipeline.loading.mhd import write_mhd
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import NODULES_IRC, phantom_chest, phantom_geometry, write_models

ROOT = Path(__file__).resolve().parents[2]
UIDS = [f"1.2.826.0.1.3680043.8.498.{k}" for k in (21, 22, 23, 24, 25)]


@pytest.fixture()
def batch(tmp_path):
    """Five phantom series (two nodules each) in the LUNA16 layout, their annotations, and models."""
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool"]
    for uid in UIDS:
        write_mhd(phantom_chest(), phantom_geometry(), root / "subset0" / f"{uid}.mhd")
        for k, center_irc in enumerate(NODULES_IRC):
            x, y, z = phantom_geometry().irc_to_xyz(center_irc)
            rows.append(f"{uid},{x},{y},{z},6.4,{k == 1}")
    annotations = tmp_path / "annotations_with_malignancy.csv"
    annotations.write_text("\n".join(rows) + "\n")
    paths = write_models(tmp_path / "models", nodule_prob=0.8)
    options = ["--data-root", str(root), "--seg-model", str(paths["seg"]), "--cls-model", str(paths["cls"])]
    return options + ["--concurrent-batches", "1", "--threads", "1"], annotations


def _logged(log: Path, status: str) -> list[str]:
    """The series a shard's log names with ``status`` (done, skipped, failed), in order."""
    lines = [line.split(" INFO: ", 1)[-1] for line in log.read_text().splitlines()]
    return [line.split()[1].rstrip(":") for line in lines if line.startswith(f"{status} ")]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_concurrent_shards_cover_every_series_once_and_merge(batch, tmp_path):
    options, annotations = batch
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CT_CACHE_DIR": str(tmp_path / "cache")}
    tasks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "diagnose",
                "--all",
                "--shard",
                f"{k}/2",
                "--out",
                str(out),
                "--json",
                *options,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outputs = [task.communicate(timeout=100) for task in tasks]
    for task, (stdout, stderr) in zip(tasks, outputs):
        assert task.returncode == 0, stdout[-2000:] + stderr[-2000:]
    printed = [[json.loads(line)["series_uid"] for line in stdout.splitlines()] for stdout, _ in outputs]

    # disjoint shards that together hold every series once, each with its own log and CSV
    assert sorted(printed[0] + printed[1]) == UIDS and printed[0] and printed[1]
    assert sorted(p.name for p in out.glob("*.json")) == [f"{uid}.json" for uid in UIDS]
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["shard-0-of-2.log", "shard-1-of-2.log"]
    for k in range(2):
        log = out / "logs" / f"shard-{k}-of-2.log"
        assert _logged(log, "done") == printed[k]
        text = log.read_text()
        assert all(f" shard {k}/2 " in line for line in text.splitlines())
        assert f"finished: {len(printed[k])} done, 0 skipped, 0 failed of {len(printed[k])} series" in text
        assert len(read_findings(out / f"findings.shard-{k}-of-2.csv")) == 2 * len(printed[k])

    merged = run_ct("merge", str(out), "--evaluate", "--annotations", str(annotations), "--json")
    assert merged.exit_code == 0, merged.output
    assert merged.stderr.strip() == f"wrote {out / 'findings.csv'}: 10 candidates of 5 series"  # stdout: JSON only
    table = read_findings(out / "findings.csv")
    assert sorted(Counter(table.series_uid).items()) == [(uid, 2) for uid in UIDS]
    (line,) = merged.stdout.splitlines()
    total = json.loads(line)["evaluation"]["total"]
    nodules = {decision: total["benign"][decision] + total["malignant"][decision] for decision in total["benign"]}
    assert sum(nodules.values()) == 10 and nodules["complete miss"] == 0  # every annotated nodule, once


def test_rerun_of_a_shard_redoes_only_the_missing_series_and_appends_to_its_log(batch, tmp_path):
    options, _ = batch
    out = tmp_path / "out"

    def shard_1() -> list[str]:
        result = run_ct("diagnose", "--all", "--shard", "1/2", "--out", str(out), *options, "--json")
        assert result.exit_code == 0, result.output
        return [json.loads(line)["series_uid"] for line in result.stdout.splitlines()]

    first = shard_1()
    assert first == UIDS[1::2]
    (out / f"{first[0]}.json").unlink()  # as if the task had been killed before this series was written
    stamp = (out / f"{first[1]}.json").stat().st_mtime_ns
    assert shard_1() == first
    assert (out / f"{first[1]}.json").stat().st_mtime_ns == stamp  # not redone
    log = out / "logs" / "shard-1-of-2.log"
    assert _logged(log, "done") == first + [first[0]]  # appended: the first run's lines are kept
    assert _logged(log, "skipped") == [first[1]]
    assert log.read_text().count("INFO: start: shard 1/2") == 2
