"""The LUNA16 CSVs of a data set: their headers and each series' rows, in patient mm.

Rows are written from :class:`~ct_pipeline.synth.series.SyntheticSeries`' patient coordinates
(``nodule_xyz``, ``candidate_xyz``), never from the anatomy frame the generator draws in.
"""

from __future__ import annotations

import csv
import io

from ct_pipeline.synth.nodules import shape_volume_mm3
from ct_pipeline.synth.series import SyntheticSeries

CANDIDATE_HEADER = ["seriesuid", "coordX", "coordY", "coordZ", "class"]
ANNOTATION_HEADER = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
TRUTH_HEADER = [*ANNOTATION_HEADER, "volume_mm3", "kind", "juxtapleural"]
MALIGNANCY_HEADER = [
    *ANNOTATION_HEADER,
    "mal_bool",
    "mal_details",
    *("bboxLowX", "bboxLowY", "bboxLowZ", "bboxHighX", "bboxHighY", "bboxHighZ"),
    "len_mal_details",
]
# File name -> header, in the order the files are written.
HEADERS = {
    "candidates.csv": CANDIDATE_HEADER,
    "annotations.csv": ANNOTATION_HEADER,
    "annotations_with_malignancy.csv": MALIGNANCY_HEADER,
    "nodule_truth.csv": TRUTH_HEADER,
}


def series_rows(series: SyntheticSeries) -> dict[str, list[list[str]]]:
    """Each CSV of :data:`HEADERS`' rows for one series."""
    plain, with_malignancy = _annotation_rows(series)
    return {
        "candidates.csv": _candidate_rows(series),
        "annotations.csv": plain,
        "annotations_with_malignancy.csv": with_malignancy,
        "nodule_truth.csv": _truth_rows(series),
    }


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: float, digits: int = 10) -> str:
    return f"{float(value):.{digits}g}"


def _annotation_rows(series: SyntheticSeries) -> tuple[list[list[str]], list[list[str]]]:
    uid = series.layout.series_uid
    plain, with_malignancy = [], []
    for nodule, xyz in zip(series.nodules, series.nodule_xyz):
        coords = [_fmt(v) for v in xyz]
        plain.append([uid, *coords, _fmt(nodule.diameter_mm)])
        # The bounding box of a shape inside a sphere of radius r is at most centre +- r on
        # every patient axis, whatever the grid's direction.
        low = [_fmt(v - nodule.max_radius_mm) for v in xyz]
        high = [_fmt(v + nodule.max_radius_mm) for v in xyz]
        details = "[" + ", ".join(str(r) for r in nodule.ratings) + "]"
        with_malignancy.append(
            [
                uid,
                *coords,
                _fmt(nodule.diameter_mm),
                str(nodule.is_malignant),
                details,
                *low,
                *high,
                str(len(nodule.ratings)),
            ]
        )
    return plain, with_malignancy


def _truth_rows(series: SyntheticSeries) -> list[list[str]]:
    """What volumetry is checked against: each nodule's shape volume (see ``shape_volume_mm3``)."""
    uid = series.layout.series_uid
    return [
        [
            uid,
            *(_fmt(v) for v in xyz),
            _fmt(nodule.diameter_mm),
            _fmt(shape_volume_mm3(nodule)),
            nodule.kind,
            str(nodule.juxtapleural),
        ]
        for nodule, xyz in zip(series.nodules, series.nodule_xyz)
    ]


def _candidate_rows(series: SyntheticSeries) -> list[list[str]]:
    uid = series.layout.series_uid
    return [
        [uid, *(f"{v:.2f}" for v in xyz), "1" if is_nodule else "0"]
        for xyz, is_nodule in zip(series.candidate_xyz, series.candidates.is_nodule)
    ]
