"""``ct compare --report DIR``: a page with each nodule in both scans, side by side.

Layout: ``DIR/index.html``; ``DIR/pair_01_prior.png``, ``DIR/pair_01_current.png``, ...;
``DIR/vanished_01.png`` (in PRIOR), ``DIR/new_01.png`` (in CURRENT).
"""

from __future__ import annotations

from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.diagnosis.result import Finding
from ct_pipeline.followup.comparison import Comparison
from ct_pipeline.followup.matching import finding_volume_mm3
from ct_pipeline.reports.html import _e, _src, page
from ct_pipeline.reports.pictures import finding_picture
from ct_pipeline.volume import CtVolume

MAX_PICTURES = 50  # pictures per kind (pairs, vanished, new); the tables list them all


def _number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}{suffix}"


def _centre(finding: Finding) -> str:
    x, y, z = finding.center_xyz
    return f"{x:.1f}, {y:.1f}, {z:.1f}"


def render_compare(comparison: Comparison, pictures: dict[str, str]) -> str:
    """The page's HTML; ``pictures`` maps "pair_01_prior"-style names to relative PNG paths."""
    c, reg = comparison, comparison.registration
    interval = "unknown" if c.interval_days is None else f"{c.interval_days:g} days (from {_e(c.interval_from)})"
    rows = [
        f"<tr><td>{k}</td><td>{p.prior_rank}</td><td>{p.current_rank}</td><td>{_centre(p.prior)}</td>"
        f"<td>{_centre(p.current)}</td><td>{p.distance_mm:.1f}</td><td>{_number(finding_volume_mm3(p.prior))}</td>"
        f"<td>{_number(finding_volume_mm3(p.current))}</td><td>{_number(p.volume_change_pct, 1, ' %')}</td>"
        f"<td>{_number(p.doubling_time_days)}</td></tr>"
        for k, p in enumerate(c.pairs, start=1)
    ]
    parts = [
        *(f"<p class='disclaimer'>WARNING: {_e(warning)}</p>" for warning in c.warnings),
        f"<p>PRIOR: {_e(c.prior.series_uid)} <span class='muted'>({_e(c.prior.source)}; study date "
        f"{_e(c.prior.study_date or 'unknown')})</span><br>CURRENT: {_e(c.current.series_uid)} <span class='muted'>"
        f"({_e(c.current.source)}; study date {_e(c.current.study_date or 'unknown')})</span><br>Interval: {interval}. "
        f"Nodules: findings at nodule probability &ge; {c.threshold:g}.</p>",
        f"<p class='muted'>Registration (CURRENT to PRIOR, rigid then affine, on the lungs): rotation "
        f"{reg.rigid_angle_deg:.1f}&deg;, shift {reg.rigid_translation_mm:.1f} mm; overlap of the lungs' air "
        f"{reg.lung_overlap_before:.3f} before, {reg.lung_overlap_after:.3f} after (1 = perfect).</p>",
        f"<h2>Seen in both ({len(c.pairs)})</h2>",
    ]
    if rows:
        parts += [
            "<table><tr><th>pair</th><th>prior #</th><th>current #</th><th>prior centre (mm)</th>"
            "<th>current centre (mm)</th><th>distance after registration (mm)</th><th>prior volume (mm&sup3;)</th>"
            "<th>current volume (mm&sup3;)</th><th>volume change</th><th>doubling time (days)</th></tr>",
            *rows,
            "</table>",
        ]
    for k in range(1, len(c.pairs) + 1):
        for when in ("prior", "current"):
            if f"pair_{k:02d}_{when}" in pictures:
                parts.append(f'<div><img src="{_src(pictures[f"pair_{k:02d}_{when}"])}" alt="pair {k}, {when}"></div>')
    for kind, title, entries in (("vanished", "In PRIOR only", c.vanished), ("new", "In CURRENT only", c.new)):
        parts.append(f"<h2>{title} ({len(entries)})</h2>")
        for k, (rank, finding) in enumerate(entries, start=1):
            near = c.pair_near(finding, "prior" if kind == "vanished" else "current")
            fragment = "" if near is None else f" &ndash; next to pair {near}'s nodule: likely a fragment of it"
            parts.append(
                f"<p>#{rank}: centre {_centre(finding)} mm, volume {_number(finding_volume_mm3(finding))} mm&sup3;, "
                f"nodule probability {finding.nodule_prob:.3f}{fragment}</p>"
            )
            if f"{kind}_{k:02d}" in pictures:
                parts.append(f'<div><img src="{_src(pictures[f"{kind}_{k:02d}"])}" alt="{kind} {k}"></div>')
    parts.append(
        "<p class='muted'>Volumes are of each nodule's outline in its own scan; a nodule the detector missed in "
        "one scan shows as new or vanished. Measurements are not for clinical decisions.</p>"
    )
    return page("ct compare report", "\n".join(parts))


def write_compare_report(report_dir: Path, prior: CtVolume, current: CtVolume, comparison: Comparison) -> Path:
    """Draw every nodule (both scans for each pair) and write ``report_dir/index.html``; returns its path."""
    report_dir = Path(report_dir)
    drawn: dict[str, str] = {}

    def draw(name: str, volume: CtVolume, finding: Finding, rank: int) -> None:
        finding_picture(volume.hu, volume.geometry, finding, report_dir / f"{name}.png", rank=rank)
        drawn[name] = f"{name}.png"

    for k, pair in enumerate(comparison.pairs[:MAX_PICTURES], start=1):
        draw(f"pair_{k:02d}_prior", prior, pair.prior, pair.prior_rank)
        draw(f"pair_{k:02d}_current", current, pair.current, pair.current_rank)
    for kind, volume, entries in (("vanished", prior, comparison.vanished), ("new", current, comparison.new)):
        for k, (rank, finding) in enumerate(entries[:MAX_PICTURES], start=1):
            draw(f"{kind}_{k:02d}", volume, finding, rank)
    path = report_dir / "index.html"
    atomic_write_text(path, render_compare(comparison, drawn))
    return path
