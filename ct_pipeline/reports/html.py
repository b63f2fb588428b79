"""The report's ``index.html``: every series, its overview, its findings with their pictures.

Every string that came from a file or the command line (series UIDs, sources, file names)
goes through :func:`html.escape`, so a folder named ``<script>`` shows as text. The page is
self-contained (inline CSS, pictures by relative path) and carries the disclaimer.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.diagnosis.volumetry import MaskMeasurement

DISCLAIMER = (
    "Research software, not a medical device: these findings come from models trained on a public "
    "data set and must never be used for clinical decisions."
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; background: #111; color: #eee; }
.disclaimer { background: #5a1d1d; border: 1px solid #c44; padding: 0.8em 1em; border-radius: 6px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #444; padding: 0.25em 0.6em; text-align: right; }
th { background: #222; } td.left { text-align: left; }
img { max-width: 100%; border: 1px solid #333; margin: 0.3em 0; }
section { border-top: 1px solid #444; margin-top: 2em; padding-top: 1em; }
.muted { color: #999; }
"""


@dataclass(frozen=True)
class SeriesReport:
    """What the page shows for one series.

    Attributes:
        result: the diagnosis.
        overview: overview PNG, relative to the report folder (None: not drawn).
        finding_pictures: PNG per shown finding, relative to the report folder, in table order.
        threshold: findings at or above it are shown.
    """

    result: DiagnosisResult
    overview: str | None
    finding_pictures: Sequence[str] = field(default_factory=tuple)
    threshold: float = 0.5


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(relative: str) -> str:
    """A relative file path as a safe, escaped URL."""
    return _e(quote(relative.replace(os.sep, "/")))


def _prob(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.3f}"


def _made_with(provenance) -> str:
    """What made the findings: ct version, each model (file, SHA-256) and the settings."""
    if not provenance:
        return "<p class='muted'>Made with: not recorded.</p>"
    models = "; ".join(
        f"{_e(kind)}: {_e(os.path.basename(str(entry.get('file', ''))))} (sha256 {_e(str(entry.get('sha256', ''))[:12])})"
        for kind, entry in (provenance.get("models") or {}).items()
    )
    settings = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (provenance.get("settings") or {}).items())
    return (
        f"<p class='muted'>Made with ct {_e(provenance.get('ct_version', '?'))}; models {models}.<br>"
        f"Settings: {settings}</p>"
    )


def _measured(measured: MaskMeasurement | None) -> str:
    if measured is None:
        return "<td>&ndash;</td>" * 4
    return (
        f"<td>{measured.volume_mm3:.0f}</td><td>{measured.long_axis_mm:.1f} x {measured.short_axis_mm:.1f}</td>"
        f"<td>{measured.mean_diameter_mm:.1f}</td><td>{measured.hu_mean:.0f}</td>"
    )


def _series_section(report: SeriesReport) -> str:
    result = report.result
    shown = result.nodules(report.threshold)
    rows = []
    for rank, finding in enumerate(shown, start=1):
        x, y, z = finding.center_xyz
        picture = report.finding_pictures[rank - 1] if rank - 1 < len(report.finding_pictures) else None
        link = f'<a href="#{_e(result.series_uid)}-{rank}">view</a>' if picture else ""
        measured = finding.measurement
        rows.append(
            f"<tr><td>{rank}</td><td>{finding.center_irc[0]}</td><td>{x:.1f}, {y:.1f}, {z:.1f}</td>"
            f"<td>{finding.diameter_mm:.1f}</td>{_measured(measured)}"
            f"<td>{_prob(finding.nodule_prob)}</td><td>{_prob(finding.malignancy_prob)}</td>"
            f"<td>{finding.n_merged}</td><td class='left'>{link}</td></tr>"
        )
    timings = ", ".join(f"{_e(stage)} {seconds:.2f} s" for stage, seconds in result.timings_s.items())
    parts = [
        f'<section id="{_e(result.series_uid)}">',
        f"<h2>Series {_e(result.series_uid)}</h2>",
        f"<p class='muted'>Source: {_e(result.source)}<br>Shape (index, row, col): "
        f"{_e(' x '.join(str(v) for v in result.shape_irc))}; {len(result.findings)} candidates "
        f"({result.n_candidates_before_merge} before merging duplicates"
        + (f", {result.n_not_classified} beyond the candidate budget not classified" if result.n_not_classified else "")
        + f"); {len(shown)} at or above "
        f"nodule probability {report.threshold:g}. Slice: the index along the scan's slices (0 = first); "
        "diameter: of the sphere with the U-Net mask's volume; volume, axes (longest extent on a slice and the "
        f"width across it) and HU: of its outline (the U-Net's component cut at the nodule's HU edge).<br>Time per stage: {timings}</p>",
        _made_with(result.provenance),
    ]
    if report.overview:
        parts.append(f'<img src="{_src(report.overview)}" alt="overview of {_e(result.series_uid)}">')
    if shown:
        parts += [
            "<table><tr><th>#</th><th>slice</th><th>centre x, y, z (mm)</th><th>diameter (mm)</th>"
            "<th>volume (mm&sup3;)</th><th>long x short axis (mm)</th><th>mean diameter (mm)</th><th>mean HU</th>"
            "<th>nodule prob</th><th>malignancy prob</th><th>merged</th><th></th></tr>",
            *rows,
            "</table>",
        ]
        for rank, picture in enumerate(report.finding_pictures, start=1):
            parts.append(
                f'<div id="{_e(result.series_uid)}-{rank}"><img src="{_src(picture)}" alt="finding {rank}"></div>'
            )
    else:
        parts.append(f"<p>No finding at or above nodule probability {report.threshold:g}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_index(reports: Sequence[SeriesReport], title: str = "ct diagnose report") -> str:
    """The page's HTML text."""
    contents = "".join(
        f'<li><a href="#{_e(r.result.series_uid)}">{_e(r.result.series_uid)}</a> &ndash; '
        f"{len(r.result.nodules(r.threshold))} finding(s)</li>"
        for r in reports
    )
    body = "\n".join(_series_section(r) for r in reports)
    return page(title, f"<ul>{contents}</ul>\n{body}")


def page(title: str, body: str) -> str:
    """A whole self-contained page: ``title``, the disclaimer, then ``body`` (HTML, already escaped)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{_e(title)}</h1>\n<p class='disclaimer'><strong>{_e(DISCLAIMER)}</strong></p>\n"
        f"{body}\n</body></html>\n"
    )


def write_index(report_dir: Path, reports: Sequence[SeriesReport], title: str = "ct diagnose report") -> Path:
    """Write ``report_dir/index.html`` atomically; returns its path."""
    path = Path(report_dir) / "index.html"
    atomic_write_text(path, render_index(reports, title))
    return path
