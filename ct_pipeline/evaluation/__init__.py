"""Evaluation: the LUNA16 FROC/CPM of a detection system, and the book's end-to-end confusion table.

Read in this order: ``tables`` (the CSV inputs) -> ``matching`` (which finding hits which
nodule) -> ``curve`` (the FROC curve) -> ``bootstrap`` (intervals) -> ``froc`` (CPM, the
report) -> ``plot``; and ``confusion`` and ``diagnosed`` (diagnosis results against the annotations)
for ``ct diagnose --evaluate``; ``rescore`` (a diagnosed folder's FROC under another score, offline).
"""

from ct_pipeline.evaluation.confusion import (
    ConfusionConfig,
    ConfusionReport,
    ConfusionTable,
    confusion_table,
    render_confusion_table,
)
from ct_pipeline.evaluation.curve import LUNA16_FP_RATES, FrocCurve, froc_curve
from ct_pipeline.evaluation.froc import FrocConfig, FrocReport, FrocSummary, evaluate_froc, evaluate_froc_files
from ct_pipeline.evaluation.tables import FindingTable, NoduleTable, read_findings, read_nodules, read_series_list

__all__ = [
    "LUNA16_FP_RATES",
    "ConfusionConfig",
    "ConfusionReport",
    "ConfusionTable",
    "FindingTable",
    "FrocConfig",
    "FrocCurve",
    "FrocReport",
    "FrocSummary",
    "NoduleTable",
    "confusion_table",
    "evaluate_froc",
    "evaluate_froc_files",
    "froc_curve",
    "read_findings",
    "read_nodules",
    "read_series_list",
    "render_confusion_table",
]
