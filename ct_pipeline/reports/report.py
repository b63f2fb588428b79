"""``--report DIR``: the pictures of each diagnosed series and the page that shows them.

Layout: ``DIR/index.html`` and, per series, ``DIR/<series>/overview.png`` and
``DIR/<series>/finding_01.png``... for the findings at or above the nodule threshold.
"""

from __future__ import annotations

import time
from pathlib import Path

from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.diagnosis.result_files import result_file_name
from ct_pipeline.reports.html import SeriesReport, write_index
from ct_pipeline.reports.pictures import finding_picture, overview_picture
from ct_pipeline.volume import CtVolume

MAX_PICTURES = 50  # findings drawn per series; the table lists them all


def series_folder_name(series_uid: str) -> str:
    """A file-name-safe folder name for a series."""
    return result_file_name(series_uid).removesuffix(".json")


def write_series_pictures(
    report_dir: Path, volume: CtVolume, result: DiagnosisResult, threshold: float = 0.5
) -> SeriesReport:
    """Draw the overview and one picture per finding at or above ``threshold`` (most probable first)."""
    folder_name = series_folder_name(result.series_uid)
    folder = Path(report_dir) / folder_name
    shown = result.nodules(threshold)
    overview_picture(volume.hu, volume.geometry, shown, folder / "overview.png", title=f"series {result.series_uid}")
    pictures = []
    for rank, finding in enumerate(shown[:MAX_PICTURES], start=1):
        name = f"finding_{rank:02d}.png"
        finding_picture(volume.hu, volume.geometry, finding, folder / name, rank=rank)
        pictures.append(f"{folder_name}/{name}")
    return SeriesReport(result, f"{folder_name}/overview.png", tuple(pictures), threshold)


class ReportWriter:
    """Adds each diagnosed series to the report as it comes (pictures, then the page again).

    Call it with ``(volume, result)``; it returns the result with a "report" stage timing. The
    page is rewritten after every series, so a long batch can be watched as it runs.
    """

    def __init__(self, report_dir: Path, threshold: float = 0.5) -> None:
        self.report_dir = Path(report_dir)
        self.threshold = threshold
        self.entries: list[SeriesReport] = []

    def __call__(self, volume: CtVolume, result: DiagnosisResult) -> DiagnosisResult:
        started = time.perf_counter()
        entry = write_series_pictures(self.report_dir, volume, result, self.threshold)
        result = result.with_timings({"report": time.perf_counter() - started})
        self.entries.append(SeriesReport(result, entry.overview, entry.finding_pictures, entry.threshold))
        write_index(self.report_dir, self.entries)
        return result
