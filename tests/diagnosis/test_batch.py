"""ct diagnose --all's batch loop: the next series is read while the networks run on this one."""

from __future__ import annotations

import threading

import pytest

from ct_pipeline.diagnosis.batch import BatchItem, run_batch
from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.networks import load_diagnosis_models
from ct_pipeline.errors import BadDataError
from ct_pipeline.volume import CtVolume
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models

UIDS = ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = write_models(tmp_path_factory.mktemp("models"))
    return load_diagnosis_models(
        paths["seg"], paths["cls"], None, InferenceOptions(device="cpu", workers=1, precision="fp32")
    )


def _items(reads: list[tuple[str, str]], folder, broken: str = "") -> list[BatchItem]:
    """The phantom under four UIDs; each "reads" a file of its own, so a result can be recognised as a repeat."""
    folder.mkdir(exist_ok=True)
    files = {uid: str(folder / f"{uid}.raw") for uid in UIDS}
    for uid, path in files.items():
        with open(path, "w") as handle:
            handle.write(uid)

    def loader(uid: str):
        def load() -> CtVolume:
            reads.append((uid, threading.current_thread().name))
            if uid == broken:
                raise BadDataError(f"{uid}: unreadable")
            return CtVolume(
                hu=phantom_chest(),
                geometry=phantom_geometry(),
                series_uid=uid,
                source="phantom",
                format="test",
                source_files=(files[uid],),
            )

        return load

    return [BatchItem(label=uid, load=loader(uid), key=uid, files=lambda uid=uid: (files[uid],)) for uid in UIDS]


def test_each_next_series_is_read_ahead_in_a_background_thread_and_results_are_the_same(models, tmp_path):
    reads: list[tuple[str, str]] = []
    ahead = list(run_batch(_items(reads, tmp_path / "series"), models, DiagnosisConfig(), out_dir=tmp_path / "a"))
    assert [uid for uid, _ in reads] == UIDS  # each read once, in order
    assert reads[0][1] == threading.main_thread().name  # nothing to overlap with yet
    assert all(thread.startswith("ct-read-ahead") for _, thread in reads[1:])
    plain_reads: list[tuple[str, str]] = []
    plain = list(
        run_batch(
            _items(plain_reads, tmp_path / "series"), models, DiagnosisConfig(), out_dir=tmp_path / "b", prefetch=False
        )
    )
    assert all(thread == threading.main_thread().name for _, thread in plain_reads)
    assert [o.status for o in ahead] == [o.status for o in plain] == ["done"] * 4
    assert [[f.to_dict() for f in o.result.findings] for o in ahead] == [
        [f.to_dict() for f in o.result.findings] for o in plain
    ]


def test_a_series_with_a_result_is_not_read_ahead_and_a_failed_read_fails_only_its_series(models, tmp_path):
    out = tmp_path / "out"
    list(run_batch(_items([], tmp_path / "series"), models, DiagnosisConfig(), out_dir=out))
    (out / f"{UIDS[0]}.json").unlink()
    (out / f"{UIDS[2]}.json").unlink()
    reads: list[tuple[str, str]] = []
    outcomes = list(
        run_batch(_items(reads, tmp_path / "series", broken=UIDS[2]), models, DiagnosisConfig(), out_dir=out)
    )
    assert [o.status for o in outcomes] == ["done", "skipped", "failed", "skipped"]
    assert [uid for uid, _ in reads] == [UIDS[0], UIDS[2]]  # the skipped ones never read
    assert outcomes[2].message == f"{UIDS[2]}: unreadable"
