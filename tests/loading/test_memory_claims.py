"""Issue 26: a header claiming more voxels than memory is refused before any voxel is read.

The memory available is fixed per test (16 GiB, or less), so the outcome does not depend on
the machine; the data files are sparse, so a 128 GiB claim costs no disk.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.folder_digest import tree_digest
from tests.helpers.loading_cases import write_raw_mhd

UID = "1.2.826.0.1.3680043.8.498.2610"
GIB = 1 << 30


@pytest.fixture()
def sixteen_gib(monkeypatch):
    monkeypatch.setattr("ct_pipeline.loading.limits.available_memory_bytes", lambda: 16 * GIB)


def _huge_mhd(folder):
    """An .mhd claiming 4096^3 int16 voxels (128 GiB) over a sparse .raw of exactly that size."""
    scan = write_raw_mhd(folder / f"{UID}.mhd", np.zeros((1, 1, 1), np.int16), "MET_SHORT", DimSize="4096 4096 4096")
    os.truncate(scan.with_suffix(".raw"), 2 * 4096**3)
    return scan


def _stats(folder):
    """Name -> (size, mtime) of each file: hashing a 128 GiB sparse file would read it all."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_info_refuses_a_header_claiming_128_gib_naming_both_sizes(tmp_path, sixteen_gib):
    scan = _huge_mhd(tmp_path)
    result = run_ct("info", scan, "--json")
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {scan}: its header claims DimSize 4096 4096 4096 of MET_SHORT, 128 GiB to load, but only 16 GiB "
        "of memory is available; check the header's size, or load it on a machine with more memory"
    )


def test_diagnose_fails_the_128_gib_series_with_both_sizes_and_writes_nothing(tmp_path, sixteen_gib):
    models = write_models(tmp_path / "models")
    (tmp_path / "scans").mkdir()
    scan = _huge_mhd(tmp_path / "scans")
    before = {"models": tree_digest(tmp_path / "models"), "scans": _stats(tmp_path / "scans")}
    result = run_ct("diagnose", scan, "--seg-model", models["seg"], "--cls-model", models["cls"])
    assert result.exit_code == 2, result.output  # the one series named is refused: bad input, one line
    assert "Traceback" not in result.output and "MemoryError" not in result.output
    assert result.stderr.splitlines()[-1].startswith(f"error: {scan}: its header claims")
    assert (
        f"error: {scan}: its header claims DimSize 4096 4096 4096 of MET_SHORT, 128 GiB to load, but only 16 GiB"
        in " ".join(result.stderr.split())
    )
    assert {"models": tree_digest(tmp_path / "models"), "scans": _stats(tmp_path / "scans")} == before


def test_info_refuses_a_detached_nrrd_header_claiming_too_much_without_reading_it(tmp_path, sixteen_gib):
    header = tmp_path / "scan.nhdr"
    header.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 4096 4096 4096\nspacings: 0.7 0.7 1\n"
        "endian: little\nencoding: raw\ndata file: scan.raw\n"
    )
    (tmp_path / "scan.raw").touch()
    os.truncate(tmp_path / "scan.raw", 2 * 4096**3)
    result = run_ct("info", header)
    assert result.exit_code == 2, result.output
    # ITK's buffer and numpy's copy: 2 x 128 GiB
    assert error_line(result).startswith(
        f"error: {header}: its header claims size 4096 4096 4096 of 16-bit signed integer, 256 GiB to load, but only 16 GiB"
    )


def test_info_refuses_a_dicom_series_larger_than_the_memory_left(tmp_path, monkeypatch):
    folder = tmp_path / "dicom"
    write_dicom_series(phantom_chest(), phantom_geometry(), folder, UID)
    monkeypatch.setattr("ct_pipeline.loading.limits.available_memory_bytes", lambda: 100 * 1024)
    result = run_ct("info", folder)
    assert result.exit_code == 2, result.output
    # rows x columns x slices x (int16 buffer + copy) = 64 * 64 * 24 * 4 bytes
    assert error_line(result) == (
        f"error: series {UID}: its header claims 24 slices of 64 x 64 pixels, 0.000366 GiB to load, but only "
        "9.54e-05 GiB of memory is available; check the header's size, or load it on a machine with more memory"
    )


def _kernel_files(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_available_memory_is_mem_available_capped_by_the_cgroup_headroom(tmp_path):
    from ct_pipeline.loading.limits import available_memory_bytes

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    meminfo = "MemTotal:       32000000 kB\nMemAvailable:    8388608 kB\n"  # 8 GiB
    _kernel_files(proc, {"meminfo": meminfo, "self/cgroup": "0::/job.slice/job_42\n"})
    assert available_memory_bytes(proc, cgroup) == 8 * GIB  # no cgroup files: MemAvailable alone
    _kernel_files(cgroup, {"job.slice/job_42/memory.max": "max\n", "job.slice/job_42/memory.current": "1\n"})
    assert available_memory_bytes(proc, cgroup) == 8 * GIB  # v2 without a limit
    _kernel_files(
        cgroup, {"job.slice/job_42/memory.max": f"{2 * GIB}\n", "job.slice/job_42/memory.current": f"{GIB // 2}\n"}
    )
    assert available_memory_bytes(proc, cgroup) == 3 * GIB // 2  # a batch job's limit, minus what it uses


def test_a_limit_on_the_jobs_cgroup_counts_when_the_steps_own_says_max(tmp_path):
    """Slurm limits the job's cgroup; the step the process runs in may have no limit of its own."""
    from ct_pipeline.loading.limits import available_memory_bytes

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    _kernel_files(proc, {"meminfo": "MemAvailable: 8388608 kB\n", "self/cgroup": "0::/job_42/step_0/user/task_0\n"})
    _kernel_files(
        cgroup,
        {
            "job_42/step_0/user/task_0/memory.max": "max\n",
            "job_42/step_0/memory.max": "max\n",
            "job_42/memory.max": f"{2 * GIB}\n",
            "job_42/memory.current": f"{GIB // 2}\n",
        },
    )
    assert available_memory_bytes(proc, cgroup) == 3 * GIB // 2


def test_available_memory_reads_a_cgroup_v1_limit(tmp_path):
    from ct_pipeline.loading.limits import available_memory_bytes

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    _kernel_files(proc, {"meminfo": "MemAvailable: 8388608 kB\n", "self/cgroup": "4:memory:/slurm/uid_1/job_7\n"})
    _kernel_files(
        cgroup,
        {
            "memory/slurm/uid_1/job_7/memory.limit_in_bytes": f"{4 * GIB}\n",
            "memory/slurm/uid_1/job_7/memory.usage_in_bytes": f"{GIB}\n",
        },
    )
    assert available_memory_bytes(proc, cgroup) == 3 * GIB
    _kernel_files(cgroup, {"memory/slurm/uid_1/job_7/memory.limit_in_bytes": "9223372036854771712\n"})  # v1's "none"
    assert available_memory_bytes(proc, cgroup) == 8 * GIB


def test_without_kernel_files_nothing_is_refused(tmp_path):
    from ct_pipeline.loading.limits import available_memory_bytes

    assert available_memory_bytes(tmp_path / "no-proc", tmp_path / "no-cgroup") is None


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux only")
def test_this_machine_reports_some_memory():
    from ct_pipeline.loading.limits import available_memory_bytes

    assert 0 < available_memory_bytes() < 1 << 50
