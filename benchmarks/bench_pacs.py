"""`ct diagnose UID --dicomweb URL` on the real 99-slice CT held by a local Orthanc, against the same
CT diagnosed from its folder on disk: what the DICOMweb fetch costs, and what a second run costs
once the series is in the cache folder.

Each run is a fresh process (see :mod:`benchmarks.processes`); the three kinds of run take turns
so that a slow phase of a shared machine hits them alike. The first-run figure gets a new cache
folder every time, so every one of its runs downloads the series (WADO-RS, 99 instances).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Figure, Section
from benchmarks.processes import SHARED, import_book_weights, measure

REPEATS = 3
REAL_UID = "1.3.6.1.4.1.14519.5.2.1.7085.2626.242193282649561899185427104083"
OVERHEAD_TARGET = 0.20  # the goal on localhost: at most 20 % over the run from disk


def run() -> Section:
    from tests.orthanc_server import dicomweb_plugin, running_orthanc

    if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").is_file() or dicomweb_plugin() is None:
        raise RuntimeError("bench pacs needs Orthanc and its DICOMweb plugin: apt-get install orthanc orthanc-dicomweb")
    folder = SHARED / "data" / "dicom" / "C3N-00247-chest-ct"
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        seg, cls = import_book_weights(tmp)
        models = ["--seg-model", str(seg), "--cls-model", str(cls), "--runs-dir", str(tmp / "no-runs"), "--json", "-q"]
        (tmp / "orthanc").mkdir()
        with running_orthanc(tmp / "orthanc") as orthanc:
            orthanc.upload(sorted(folder.glob("*.dcm")))
            times = _measure_all(models, orthanc.dicomweb, folder, tmp)
    return _section(times)


def _measure_all(models: list[str], url: str, folder: Path, tmp: Path) -> dict[str, list[float]]:
    ct = [sys.executable, "-m", "cli"]
    warm_cache = tmp / "warm-cache"
    # Fills the warm cache (and the OS page cache for the disk run), not timed.
    measure([*ct, "diagnose", REAL_UID, *models, "--dicomweb", url, "--cache-dir", str(warm_cache)])
    times: dict[str, list[float]] = {"disk": [], "first": [], "second": [], "fetch": [], "info_disk": []}
    for repeat in range(REPEATS):
        cold = tmp / f"cold-cache-{repeat}"
        times["disk"].append(
            measure([*ct, "diagnose", str(folder), *models, "--cache-dir", str(cold / "unused")])["wall_s"]
        )
        times["first"].append(
            measure([*ct, "diagnose", REAL_UID, *models, "--dicomweb", url, "--cache-dir", str(cold)])["wall_s"]
        )
        times["second"].append(
            measure([*ct, "diagnose", REAL_UID, *models, "--dicomweb", url, "--cache-dir", str(warm_cache)])["wall_s"]
        )
        fetch_cache = tmp / f"fetch-cache-{repeat}"
        times["fetch"].append(
            measure(
                [*ct, "info", REAL_UID, "--dicomweb", url, "--cache-dir", str(fetch_cache), "--json"], json_output=False
            )["wall_s"]
        )
        times["info_disk"].append(measure([*ct, "info", str(folder), "--json"], json_output=False)["wall_s"])
    return times


def _section(times: dict[str, list[float]]) -> Section:
    disk, first, second = (statistics.median(times[k]) for k in ("disk", "first", "second"))
    fetch = statistics.median(times["fetch"]) - statistics.median(times["info_disk"])
    limit = 1 + OVERHEAD_TARGET
    return Section(
        key="pacs",
        title="Diagnosing from a PACS: DICOMweb (Orthanc on localhost) against disk",
        command="python -m benchmarks.run pacs",
        setup=(
            f"the real 99-slice CPTAC chest CT, book weights, `ct diagnose` on the CPU; Orthanc 1.10 with its DICOMweb "
            f"plugin on localhost (HTTP, no auth); median of {REPEATS} fresh processes per figure, taking turns"
        ),
        expectation="the download of ~50 MB over localhost is a few seconds, small beside the diagnosis itself",
        figures=[
            Figure(
                "diagnose by UID through Orthanc, first run (fetch included)",
                first,
                "s",
                disk,
                "from the folder on disk",
                disk / first,
                f"<= {limit:.1f}x the disk run's time",
                first <= limit * disk,
                note=f"overhead {100 * (first / disk - 1):.0f} %; each run downloads into a new cache folder",
            ),
            Figure(
                "diagnose by UID through Orthanc, second run (cached copy)",
                second,
                "s",
                disk,
                "from the folder on disk",
                disk / second,
                f"<= {limit:.1f}x the disk run's time",
                second <= limit * disk,
                note="one QIDO query to see that the server's instances are unchanged, then the cached folder is read",
            ),
            Figure(
                "the fetch alone (ct info by UID, cold, minus ct info on the folder)",
                fetch,
                "s",
                note="QIDO look-up, WADO-RS of 99 instances, written to a temporary folder and renamed",
            ),
        ],
    )
