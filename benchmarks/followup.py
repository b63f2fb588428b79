"""``ct compare`` on ``ct synth --follow-up`` pairs, against their truth.

Usage: python -m benchmarks.followup [--record] DATA_ROOT RUNS_DIR [DATA_ROOT RUNS_DIR ...]

DATA_ROOT: a ``ct synth --follow-up`` folder (``followup_pairs.csv``, ``followup_truth.csv``);
RUNS_DIR: the trained models to diagnose it with (``seg/best.ckpt``, ``cls/best.ckpt``). Each
pair is compared (diagnosed, registered, matched); prints one JSON object: per data root and
size band, how many true nodules present in both scans were paired, and the median and largest
error of the volume change in percentage points; registration's residual at the true nodule
centres. ``--record`` also writes benchmarks/results/followup.json and BENCHMARKS.md's
"Follow-up" section.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

BANDS_MM = ((3.0, 6.0), (6.0, 10.0), (10.0, 40.0))


def compare_pairs(data_root: Path, runs_dir: Path) -> tuple[list, list[float], float]:
    """(outcomes of every true nodule, registration errors at nodule centres in mm, seconds per pair)."""
    from ct_pipeline.apps.compare import CompareRequest, run_compare
    from ct_pipeline.apps.diagnose import DiagnoseRequest
    from ct_pipeline.evaluation.followup import read_follow_up_truth, score_comparison, truth_point

    truth = read_follow_up_truth(data_root)
    with open(data_root / "followup_pairs.csv", encoding="utf-8", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    diagnose = DiagnoseRequest(
        data_roots=(data_root,), seg_model=runs_dir / "seg" / "best.ckpt", cls_model=runs_dir / "cls" / "best.ckpt"
    )
    outcomes, residuals, started = [], [], time.perf_counter()
    for pair in pairs:
        request = CompareRequest(prior=pair["prior_seriesuid"], current=pair["current_seriesuid"], diagnose=diagnose)
        comparison = run_compare(request)
        outcomes += score_comparison(comparison, truth)
        for row in truth:
            before, after = truth_point(row, "prior"), truth_point(row, "current")
            if row["prior_seriesuid"] == pair["prior_seriesuid"] and before is not None and after is not None:
                residuals.append(float(np.linalg.norm(comparison.registration.prior_to_current(before) - after)))
        print(f"{pair['prior_seriesuid'][-12:]}: {len(comparison.pairs)} pairs", file=sys.stderr, flush=True)
    return outcomes, residuals, (time.perf_counter() - started) / max(len(pairs), 1)


def summary(outcomes: list, residuals: list[float], seconds_per_pair: float) -> dict:
    bands = {}
    for low, high in BANDS_MM:
        both = [o for o in outcomes if o.status in ("grown", "stable", "shrunk") and low <= o.diameter_mm < high]
        errors = np.abs([o.error_pp for o in both if o.error_pp is not None])
        bands[f"{low:g}-{high:g} mm"] = {
            "in_both_scans": len(both),
            "found_in_both": sum(o.found_prior and o.found_current for o in both),
            "paired": sum(o.matched for o in both),
            "median_abs_error_pp": round(float(np.median(errors)), 1) if errors.size else None,
            "max_abs_error_pp": round(float(errors.max()), 1) if errors.size else None,
            "within_15pp": round(float((errors <= 15).mean()), 2) if errors.size else None,
        }
    vanished = [o for o in outcomes if o.status == "vanished"]
    new = [o for o in outcomes if o.status == "new"]
    return {
        "bands": bands,
        "vanished_left_unpaired": f"{sum(not o.matched for o in vanished)}/{len(vanished)}",
        "new_found_unpaired": f"{sum(o.found_current and not o.matched for o in new)}/{len(new)}",
        "registration_error_mm": {
            "median": round(float(np.median(residuals)), 2),
            "max": round(float(np.max(residuals)), 2),
        },
        "seconds_per_pair": round(seconds_per_pair, 1),
    }


def record(report: dict, argv: list[str]) -> None:
    """BENCHMARKS.md's "Follow-up" section: per data root and size band."""
    from benchmarks.common import Figure, Section
    from benchmarks.run import write_benchmarks_md

    figures = []
    for root, result in report.items():
        name = Path(root).name
        for band, b in result["bands"].items():
            big = float(band.split("-")[0]) >= 6.0
            figures.append(
                Figure(
                    f"{name}: volume change error, {band}",
                    b["median_abs_error_pp"] if b["median_abs_error_pp"] is not None else float("nan"),
                    "pp (median of |error|)",
                    None,
                    "",
                    None,
                    "every nodule paired, within 15 pp" if big else "",
                    None
                    if not big or not b["in_both_scans"]
                    else b["paired"] == b["in_both_scans"] and b["within_15pp"] == 1.0,
                    f"{b['in_both_scans']} nodules in both scans, {b['found_in_both']} found in both, {b['paired']} paired; "
                    f"largest |error| {b['max_abs_error_pp']} pp; share within 15 pp {b['within_15pp']}",
                )
            )
        figures.append(
            Figure(
                f"{name}: registration error at the nodules",
                result["registration_error_mm"]["median"],
                "mm (median)",
                note=f"largest {result['registration_error_mm']['max']} mm; {result['seconds_per_pair']} s a pair (two "
                f"diagnoses and the registration); vanished left unpaired {result['vanished_left_unpaired']}, new ones "
                f"found and left unpaired {result['new_found_unpaired']}",
            )
        )
    Section(
        key="followup",
        title="ct compare on synthetic follow-ups against their truth (python -m benchmarks.followup)",
        command="python -m benchmarks.followup --record " + " ".join(argv),
        setup="`ct synth --follow-up` pairs (pose 2-4 degrees and 3-8 mm, nodules grown x1.4-2.6, stable, shrunk "
        "x0.45-0.75, vanished or new), each diagnosed with the models of a recipe run of its style and compared; a "
        "true nodule is paired when the pair holds the nodule findings within its radius in both scans",
        figures=figures,
        expectation="registration within a millimetre (the pose is rigid and the anatomy the same); errors of the "
        "change from the two volumes' errors, smaller than either where a nodule's outline errs alike in both",
    ).save()
    write_benchmarks_md()


def main(argv: list[str]) -> int:
    recording = "--record" in argv
    args = [a for a in argv if a != "--record"]
    if len(args) < 2 or len(args) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    report = {root: summary(*compare_pairs(Path(root), Path(runs))) for root, runs in zip(args[::2], args[1::2])}
    print(json.dumps(report, indent=2))
    if recording:
        record(report, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
