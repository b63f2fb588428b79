"""The same trained models, two groupings of the mask: the book's (its erosion drops thin
components) and ``keep_eroded_away``; prints candidates, CPM and nodules found for each.

Usage: python -m benchmarks.grouping_quality DEMO_DIR   (the folder of a finished `ct demo`)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
from ct_pipeline.diagnosis.networks import load_diagnosis_models
from ct_pipeline.diagnosis.pipeline import diagnose
from ct_pipeline.evaluation.froc import FrocConfig, evaluate_froc
from ct_pipeline.evaluation.tables import FindingTable, read_nodules
from ct_pipeline.loading import load_ct


def main(demo: Path) -> None:
    uids = (demo / "val_series.txt").read_text().split()
    models = load_diagnosis_models(
        demo / "runs/seg/best.ckpt", demo / "runs/cls/best.ckpt", None, InferenceOptions(device="cpu")
    )
    truth = read_nodules(demo / "data/annotations.csv")
    found: dict[bool, list] = {False: [], True: []}
    for uid in uids:
        volume = load_ct(uid, data_roots=[demo / "data"], cache_dir=demo / "cache")
        for keep in found:
            result = diagnose(volume, models, DiagnosisConfig(keep_eroded_away=keep))
            found[keep] += [(uid, f.center_xyz, f.nodule_prob) for f in result.findings]
    for keep, rows in found.items():
        table = FindingTable.from_arrays(
            np.array([r[0] for r in rows], dtype=object),
            np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 3),
            np.array([r[2] for r in rows], dtype=np.float64),
        )
        report = evaluate_froc(table, truth, tuple(uids), config=FrocConfig(bootstrap_samples=200))
        summary = report.to_dict()
        print(
            json.dumps(
                {
                    "keep_eroded_away": keep,
                    "candidates": len(rows),
                    "cpm": round(report.overall.cpm, 3),
                    "cpm_ci95": [round(v, 3) for v in report.overall.cpm_ci95],
                    "detected": summary["n_detected"],
                    "nodules": summary["n_nodules"],
                }
            )
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
