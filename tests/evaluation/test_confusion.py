"""The book's end-to-end confusion table: hand-built series, thresholds, matching distance, rendering."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
from rich.console import Console

from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.evaluation import ConfusionConfig, ConfusionTable, confusion_table, render_confusion_table
from ct_pipeline.luna16 import read_malignancy

S1, S2, S3 = "1.2.3.1", "1.2.3.2", "1.2.3.3"


@dataclass(frozen=True)
class Finding:
    center_xyz: tuple[float, float, float]
    nodule_prob: float
    malignancy_prob: float | None


def annotations(*rows) -> pd.DataFrame:
    """rows: (series, x, y, z, diameter, is_malignant True/False/None)."""
    frame = pd.DataFrame(
        rows, columns=["series_uid", "center_x_mm", "center_y_mm", "center_z_mm", "diameter_mm", "is_malignant"]
    )
    frame["is_malignant"] = frame["is_malignant"].astype("boolean")
    return frame


TRUTH = annotations(
    (S1, 0, 0, 0, 10, True),  # M
    (S1, 50, 0, 0, 10, False),  # Bn
    (S1, 100, 0, 0, 6, False),  # B2, missed
    (S1, 200, 0, 0, 10, None),  # U, malignancy unknown
)
FINDINGS = [
    Finding((1, 0, 0), 0.9, 0.8),  # malignant, on M (0.1 diameters)
    Finding((3, 0, 0), 0.2, 0.8),  # filtered out, on M: M keeps the most advanced decision
    Finding((50, 6, 0), 0.9, 0.3),  # benign, on Bn (0.6 diameters)
    Finding((50, 7, 0), 0.95, 0.9),  # malignant, 0.7 diameters from Bn: not < 0.7, a non-nodule
    Finding((300, 0, 0), 0.1, None),  # filtered out, non-nodule
    Finding((200, 1, 0), 0.9, None),  # on U: left out with U
    Finding((100, 4.3, 0), 0.6, None),  # 0.717 diameters from B2: non-nodule, benign (no malignancy model)
]


def test_book_table_by_hand():
    report = confusion_table({S1: FINDINGS}, TRUTH)
    assert report.total.counts == (
        (0, 1, 1, 1),  # non-nodule: filtered (300,0,0), benign (100,4.3,0), malignant (50,7,0)
        (1, 0, 1, 0),  # benign: B2 missed, Bn predicted benign
        (0, 0, 0, 1),  # malignant: M predicted malignant
    )
    assert report.n_unknown_malignancy == 1
    assert report.per_series[S1] == report.total


def test_match_fraction_and_thresholds():
    # With 0.75 diameters, (50,7,0) joins Bn (which becomes malignant) and (100,4.3,0) finds B2.
    wider = confusion_table({S1: FINDINGS}, TRUTH, ConfusionConfig(match_fraction=0.75))
    assert wider.total.counts == ((0, 1, 0, 0), (0, 0, 1, 1), (0, 0, 0, 1))
    # A probability equal to its threshold passes it.
    edge = confusion_table(
        {S1: [Finding((0, 0, 0), 0.5, 0.5)]}, TRUTH, ConfusionConfig(nodule_threshold=0.5, malignancy_threshold=0.5)
    )
    assert edge.total.counts[2] == (0, 0, 0, 1)
    strict = confusion_table({S1: [Finding((0, 0, 0), 0.5, 0.5)]}, TRUTH, ConfusionConfig(nodule_threshold=0.6))
    assert strict.total.counts[2] == (0, 1, 0, 0)


def test_finding_on_two_nodules_counts_for_both():
    truth = annotations((S1, 0, 0, 0, 10, True), (S1, 4, 0, 0, 10, False))
    report = confusion_table({S1: [Finding((2, 0, 0), 0.9, 0.9)]}, truth)
    assert report.total.counts == ((0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 1))


def test_per_series_and_total():
    truth = annotations((S1, 0, 0, 0, 10, True), (S2, 0, 0, 0, 10, False), (S3, 0, 0, 0, 10, True))
    report = confusion_table(
        {S1: [Finding((0, 0, 0), 0.9, 0.1)], S2: [], "1.2.3.9": [Finding((0, 0, 0), 0.9, 0.9)]}, truth
    )
    assert list(report.per_series) == [S1, S2, "1.2.3.9"]  # S3 was not diagnosed: ignored
    assert report.per_series[S1].counts[2] == (0, 0, 1, 0)
    assert report.per_series[S2].counts[1] == (1, 0, 0, 0)
    assert report.per_series["1.2.3.9"].counts[0] == (0, 0, 0, 1)
    assert report.total.counts == ((0, 0, 0, 1), (1, 0, 0, 0), (0, 0, 1, 0))
    assert report.to_dict()["total"]["benign"]["complete miss"] == 1


def test_candidate_table_rows_that_are_not_nodules_are_not_truth():
    truth = annotations((S1, 0, 0, 0, 10, True), (S1, 50, 0, 0, 0, None))
    truth["is_nodule"] = [True, False]
    report = confusion_table({S1: [Finding((50, 0, 0), 0.9, 0.1)]}, truth)
    assert report.total.counts == ((0, 0, 1, 0), (0, 0, 0, 0), (1, 0, 0, 0))


def test_bad_annotations_and_config():
    with pytest.raises(BadDataError, match="is_malignant"):
        confusion_table({S1: []}, TRUTH.drop(columns="is_malignant"))
    with pytest.raises(BadDataError, match="positive diameter"):
        confusion_table({S1: []}, annotations((S1, 0, 0, 0, 0, True)))
    with pytest.raises(BadInputError, match="nodule_threshold = 1.5"):
        ConfusionConfig(nodule_threshold=1.5)


def test_render_as_rich_table():
    console = Console(record=True, width=120)
    console.print(
        render_confusion_table(ConfusionTable(((0, 5, 2, 1), (3, 0, 7, 0), (0, 1, 0, 4))), title="series 1.2.3.1")
    )
    text = console.export_text()
    assert "series 1.2.3.1" in text
    lines = {line.split()[1] if line.split() else "": line for line in text.splitlines() if "│" in line}
    assert [cell.strip() for cell in lines["non-nodule"].split("│")[2:6]] == ["-", "5", "2", "1"]
    assert [cell.strip() for cell in lines["malignant"].split("│")[2:6]] == ["0", "1", "0", "4"]


def test_real_malignancy_table_with_perfect_findings(luna16_tables_dir):
    truth = read_malignancy(luna16_tables_dir / "annotations_with_malignancy.csv")
    by_series: dict[str, list[Finding]] = {}
    for row in truth.itertuples():
        center = (row.center_x_mm, row.center_y_mm, row.center_z_mm)
        by_series.setdefault(row.series_uid, []).append(Finding(center, 1.0, 1.0 if row.is_malignant else 0.0))
    report = confusion_table(by_series, truth)
    assert report.total.counts == ((0, 0, 0, 0), (0, 0, 804, 0), (0, 0, 0, 378))
