"""Report pictures (PNG, the right orientation) and the HTML page (escaped, with the disclaimer)."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.geometry import Geometry
from ct_pipeline.reports.html import DISCLAIMER, SeriesReport, render_index, write_index
from ct_pipeline.reports.pictures import finding_picture, overview_picture

GEOMETRY = Geometry((0.0, 0.0, 0.0), (0.8, 0.8, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _volume() -> np.ndarray:
    hu = np.full((30, 80, 80), -1000, dtype=np.int16)
    hu[15, 40, 40] = 0
    hu[12:18, 36:44, 36:44] = 100  # a bright block, the "finding"
    return hu


def test_finding_picture_is_a_png_with_three_views(tmp_path):
    finding = Finding((32.0, 32.0, 30.0), (15, 40, 40), 6.0, 0.97, 0.4)
    path = finding_picture(_volume(), GEOMETRY, finding, tmp_path / "f.png", rank=1)
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 900
    # the red centre mark is drawn on every view: red pixels in each third of the picture
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.4) & (image[..., 2] < 0.4)
    thirds = np.array_split(red, 3, axis=1)
    assert all(part.sum() > 20 for part in thirds)


def test_overview_marks_every_finding_with_the_head_up(tmp_path):
    hu = _volume()
    hu[25:, 10:20, 10:20] = 1000  # bright near the last slices: the head end (z grows with the index)
    findings = [Finding((32.0, 32.0, 30.0), (15, 40, 40), 6.0, 0.97), Finding((10.0, 10.0, 6.0), (3, 12, 12), 4.0, 0.6)]
    path = overview_picture(hu, GEOMETRY, findings, tmp_path / "o.png", title="series 1.2.3")
    image = imread(path)
    gray = image[..., :3].mean(axis=2)
    left = gray[:, : gray.shape[1] // 2]
    rows = np.flatnonzero((left > 0.55).sum(axis=1) > 3)  # the bright block's projection
    assert rows.size and rows.mean() < left.shape[0] * 0.5  # drawn in the upper half


def test_index_escapes_file_strings_and_carries_the_disclaimer(tmp_path):
    finding = Finding((1.0, 2.0, 3.0), (1, 2, 3), 5.0, 0.9, None)
    result = DiagnosisResult(
        "1.2.3",
        (finding, Finding((0, 0, 0), (0, 0, 0), 1.0, 0.1)),
        {"load": 1.0},
        4,
        (2, 3, 4),
        source="/data/<script>alert(1)</script>&",
    )
    report = SeriesReport(result, "1.2.3/overview.png", ("1.2.3/finding_01.png",), threshold=0.5)
    page = render_index([report])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
    assert DISCLAIMER in page
    assert 'src="1.2.3/finding_01.png"' in page and 'src="1.2.3/overview.png"' in page
    assert "0.900" in page and "0.100" not in page  # below the threshold: not in the table
    path = write_index(tmp_path, [report])
    assert path.read_text() == page
