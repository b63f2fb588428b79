"""PNG pictures of findings: three views around each one, and an overview of the whole scan.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global state), so
pictures can be drawn from any thread or process without a display.

Views are drawn in voxel space with millimetre axes (the CT's own grid, as a radiologist's
viewer shows it), in a lung window (level -600 HU, width 1500 HU), with the head up and the
patient's front at the top of axial views.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ct_pipeline.atomic import atomic_path
from ct_pipeline.diagnosis.result import Finding
from ct_pipeline.geometry import Geometry

LUNG_WINDOW_HU = (-1350.0, 150.0)
VIEW_HALF_WIDTH_MM = 32.0
_MARK = "#ff3b30"


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: os.PathLike | str) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", facecolor="black")
    return target


def _label(finding: Finding, rank: int | None) -> str:
    parts = [f"#{rank}" if rank is not None else "", f"nodule {finding.nodule_prob:.2f}"]
    if finding.malignancy_prob is not None:
        parts.append(f"malignancy {finding.malignancy_prob:.2f}")
    return "  ".join(p for p in parts if p)


def _head_up(geometry: Geometry) -> bool:
    """True when the slice index grows towards the head (patient +z), so index 0 is drawn at the bottom."""
    return float(geometry.direction_matrix[2, 2]) >= 0


def finding_picture(
    hu: np.ndarray, geometry: Geometry, finding: Finding, path: os.PathLike | str, rank: int | None = None
) -> Path:
    """Axial, coronal and sagittal views (64 mm wide) centred on ``finding``; returns the PNG path.

    The centre is marked with a circle of the finding's diameter; the title carries the
    probabilities, the centre in mm and the diameter.
    """
    spacing_irc = np.asarray(geometry.spacing_xyz[::-1], dtype=np.float64)
    center = np.clip(np.asarray(finding.center_irc, dtype=np.int64), 0, np.asarray(hu.shape) - 1)
    half = np.maximum(np.ceil(VIEW_HALF_WIDTH_MM / spacing_irc).astype(np.int64), 1)
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, hu.shape)
    figure = _figure(12, 4.6)
    axes = figure.subplots(1, 3)
    radius_mm = max(finding.diameter_mm / 2.0, 2.0)
    # (name, image axes (vertical, horizontal) in irc, the fixed axis)
    views = (("axial", (1, 2), 0), ("coronal", (0, 2), 1), ("sagittal", (0, 1), 2))
    from matplotlib.patches import Circle

    for ax, (name, (vertical, horizontal), fixed) in zip(axes, views):
        index: list[slice | int] = [slice(lo[a], hi[a]) for a in range(3)]
        index[fixed] = int(center[fixed])
        image = hu[tuple(index)].astype(np.float32)
        v_mm = (np.array([lo[vertical], hi[vertical]]) - center[vertical] - 0.5) * spacing_irc[vertical]
        h_mm = (np.array([lo[horizontal], hi[horizontal]]) - center[horizontal] - 0.5) * spacing_irc[horizontal]
        flip = vertical == 0 and _head_up(geometry)
        extent = (h_mm[0], h_mm[1], v_mm[0], v_mm[1]) if flip else (h_mm[0], h_mm[1], v_mm[1], v_mm[0])
        ax.imshow(
            image,
            cmap="gray",
            vmin=LUNG_WINDOW_HU[0],
            vmax=LUNG_WINDOW_HU[1],
            extent=extent,
            origin="lower" if flip else "upper",
            interpolation="bilinear",
        )
        ax.add_patch(Circle((0, 0), radius_mm, fill=False, edgecolor=_MARK, linewidth=1.2))
        for sign in (-1, 1):
            ax.plot([sign * (radius_mm + 2), sign * (radius_mm + 7)], [0, 0], color=_MARK, linewidth=1.2)
            ax.plot([0, 0], [sign * (radius_mm + 2), sign * (radius_mm + 7)], color=_MARK, linewidth=1.2)
        ax.set_title(name, color="white", fontsize=10)
        ax.tick_params(colors="#bbbbbb", labelsize=7)
        ax.set_xlabel("mm", color="#bbbbbb", fontsize=7)
    x, y, z = finding.center_xyz
    figure.suptitle(
        f"{_label(finding, rank)}\ncentre ({x:.1f}, {y:.1f}, {z:.1f}) mm, diameter {finding.diameter_mm:.1f} mm",
        color="white",
        fontsize=11,
    )
    figure.subplots_adjust(left=0.04, right=0.99, bottom=0.1, top=0.8, wspace=0.2)
    return _save(figure, path)


def overview_picture(
    hu: np.ndarray,
    geometry: Geometry,
    findings: Sequence[Finding],
    path: os.PathLike | str,
    title: str = "",
) -> Path:
    """Front and side projections of the scan (mean HU, like a radiograph) with every finding numbered.

    ``findings`` are numbered from 1 in the order given (the report's table order).
    """
    spacing_irc = np.asarray(geometry.spacing_xyz[::-1], dtype=np.float64)
    n_index, n_rows, n_cols = hu.shape
    # Mean of clipped HU per ray, accumulated slice by slice: no float copy of the volume.
    front = np.empty((n_index, n_cols), dtype=np.float32)
    side = np.empty((n_index, n_rows), dtype=np.float32)
    for i in range(n_index):
        slab = np.clip(hu[i], -1000, 1000).astype(np.float32)
        front[i] = slab.mean(axis=0)
        side[i] = slab.mean(axis=1)
    height_mm, width_mm, depth_mm = n_index * spacing_irc[0], n_cols * spacing_irc[2], n_rows * spacing_irc[1]
    figure = _figure(11, 6.5)
    axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [max(width_mm, 1), max(depth_mm, 1)]})
    head_up = _head_up(geometry)
    for ax, image, horizontal, extent_w, name in (
        (axes[0], front, 2, width_mm, "front (coronal projection)"),
        (axes[1], side, 1, depth_mm, "side (sagittal projection)"),
    ):
        extent = (0, extent_w, 0, height_mm) if head_up else (0, extent_w, height_mm, 0)
        ax.imshow(image, cmap="gray", extent=extent, origin="lower" if head_up else "upper", aspect="equal")
        for rank, finding in enumerate(findings, start=1):
            i, _, _ = finding.center_irc
            h = (finding.center_irc[horizontal] + 0.5) * spacing_irc[horizontal]
            v = (i + 0.5) * spacing_irc[0]
            radius = max(finding.diameter_mm, 8.0)
            from matplotlib.patches import Circle

            ax.add_patch(Circle((h, v), radius, fill=False, edgecolor=_MARK, linewidth=1.5))
            ax.annotate(
                str(rank),
                (h + radius, v + radius),
                color=_MARK,
                fontsize=10,
                fontweight="bold",
                ha="left",
                va="bottom",
            )
        ax.set_title(name, color="white", fontsize=10)
        ax.tick_params(colors="#bbbbbb", labelsize=7)
        ax.set_xlabel("mm", color="#bbbbbb", fontsize=7)
    summary = f"{len(findings)} finding{'s' if len(findings) != 1 else ''} marked"
    figure.suptitle(f"{title}\n{summary}" if title else summary, color="white", fontsize=11)
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.88, wspace=0.12)
    return _save(figure, path)
