"""The FROC curve as a PNG: curve, bootstrap band, the seven operating points, size groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ct_pipeline.atomic import atomic_path
from ct_pipeline.evaluation.froc import FrocReport


def plot_froc(report: FrocReport, path: Path, *, title: str = "FROC (LUNA16)") -> Path:
    """Draw ``report`` to ``path`` (PNG, written atomically) and return the path.

    The x axis is log2 from 1/8 to 8 false positives per scan, as in the challenge's figures.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (also on machines without a display)
    import matplotlib.pyplot as plt

    overall = report.overall
    rates = np.asarray(overall.fp_rates)
    dense = np.geomspace(rates[0], rates[-1], 400)
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    try:
        if overall.band_lower is not None:
            axes.fill_between(
                overall.band_fp_rates,
                overall.band_lower,
                overall.band_upper,
                color="tab:blue",
                alpha=0.2,
                linewidth=0,
                label="95% bootstrap band",
            )
        cpm_text = f"all nodules, CPM {overall.cpm:.3f}"
        if overall.cpm_ci95 is not None:
            cpm_text += f" ({overall.cpm_ci95[0]:.3f}-{overall.cpm_ci95[1]:.3f})"
        axes.plot(dense, overall.curve.sensitivity_at(dense), color="tab:blue", linewidth=2, label=cpm_text)
        axes.plot(rates, overall.sensitivity, "o", color="tab:blue", markersize=6)
        for rate, value in zip(rates, overall.sensitivity):
            below = value > 0.9  # keep the label inside the axes
            axes.annotate(
                f"{value:.2f}",
                (rate, value),
                textcoords="offset points",
                xytext=(0, -12 if below else 7),
                ha="center",
                fontsize=8,
                color="tab:blue",
            )
        for group, color in zip(report.by_size, ("tab:orange", "tab:green", "tab:red")):
            if group.n_nodules == 0:
                continue
            axes.plot(
                dense,
                group.curve.sensitivity_at(dense),
                "--",
                color=color,
                linewidth=1.2,
                label=f"{group.label}: {group.n_nodules} nodules, CPM {group.cpm:.3f}",
            )
        axes.set_xscale("log", base=2)
        axes.set_xticks(rates, [f"{r:g}" for r in rates])
        axes.set_xlim(rates[0], rates[-1])
        axes.set_ylim(0, 1.04)
        axes.set_yticks(np.linspace(0, 1, 11))
        axes.grid(True, which="both", alpha=0.4)
        axes.set_xlabel("average number of false positives per scan")
        axes.set_ylabel("sensitivity")
        axes.set_title(f"{title}: {report.n_scans} scans, {overall.n_nodules} nodules")
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")  # explicit: the temporary name has no .png suffix
    finally:
        plt.close(figure)
    return Path(path)
