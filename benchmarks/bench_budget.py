"""The candidate budget (#29): what classifying only the best K candidates per scan costs and saves.

    python -m benchmarks.bench_budget real [K ...]
    python -m benchmarks.bench_budget synthetic DATA=SEG_CKPT [DATA=SEG_CKPT ...]

``real``: the real 99-slice CT with the book's weights (imported with `ct models import-book`),
``diagnose`` once per K (0: no budget) in this process: classification time, candidates
classified, findings >= 0.5 and whether the book's 4 confident findings in the lungs stay >= 0.9.

``synthetic``: the rank of every true nodule's best candidate under
:func:`~ct_pipeline.diagnosis.candidates.budget_order`, on the validation series (every 4th by
UID) of ``ct synth`` folders with a U-Net trained on their training series. Only the U-Net is
needed: the ranking never looks at the classifier, so the worst rank is the smallest K that
keeps every nodule that the mask found. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

# The crop voxels of the book's own findings >= 0.9 inside the lung region: the book's grouping
# (no components put back after erosion) over our lung-restricted mask, classified >= 0.9; the
# same 4 that BENCHMARKS.md's diagnose section matches against the book's printed output.
BOOK_CONFIDENT_IRC = ((31, 168, 106), (31, 277, 443), (44, 98, 221), (44, 287, 51))
BUDGETS = (50, 100, 200, 400, 0)


def real(budgets: tuple[int, ...] = BUDGETS) -> list[dict]:
    """One row per K: seconds of classification, candidates classified, findings >= 0.5, book's 4 kept."""
    from benchmarks.processes import SHARED, import_book_weights
    from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
    from ct_pipeline.diagnosis.networks import load_diagnosis_models
    from ct_pipeline.diagnosis.pipeline import diagnose
    from ct_pipeline.loading import load_ct

    volume = load_ct(SHARED / "data" / "dicom" / "C3N-00247-chest-ct")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ct-bench-budget-") as tmp:
        seg, cls = import_book_weights(Path(tmp))
        models = load_diagnosis_models(seg, cls, None, InferenceOptions(device="cpu"))
        for k in budgets:
            result = diagnose(volume, models, DiagnosisConfig(max_candidates=k))
            confident = {f.center_irc for f in result.findings if f.nodule_prob >= 0.9}
            rows.append(
                {
                    "max_candidates": k,
                    "classification_s": round(result.timings_s["classification"], 2),
                    "classified": result.n_candidates_before_merge,
                    "not_classified": result.n_not_classified,
                    "findings_0.5": len(result.nodules(0.5)),
                    "findings_0.9": len(result.nodules(0.9)),
                    "book_confident_kept": sum(tuple(v) in confident for v in BOOK_CONFIDENT_IRC),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def nodule_ranks(data_root: Path, seg_model: Path, val_stride: int = 4) -> list[dict]:
    """For each annotated nodule of the validation series: the best (lowest) budget rank of a
    candidate within its radius, or None where the mask gave it no candidate."""
    import numpy as np

    from ct_pipeline.catalog import open_catalog
    from ct_pipeline.diagnosis.candidates import budget_order
    from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
    from ct_pipeline.diagnosis.networks import load_diagnosis_models
    from ct_pipeline.diagnosis.pipeline import propose_candidates
    from ct_pipeline.loading import load_entry
    from ct_pipeline.luna16 import read_annotations

    with tempfile.TemporaryDirectory(prefix="ct-bench-budget-") as cache:
        catalog = open_catalog([data_root], Path(cache))
        series = catalog.split(val_stride)[1]
        models = load_diagnosis_models(seg_model, None, None, InferenceOptions(device="cpu"))
        nodules = read_annotations(data_root / "annotations.csv")
        rows = []
        for uid in series:
            candidates, _ = propose_candidates(load_entry(catalog.entries[uid]), models, DiagnosisConfig())
            rank = np.empty(len(candidates), dtype=np.int64)
            rank[budget_order(candidates)] = np.arange(len(candidates))
            for nodule in nodules[nodules["series_uid"] == uid].itertuples():
                centre = np.array([nodule.center_x_mm, nodule.center_y_mm, nodule.center_z_mm])
                near = np.linalg.norm(candidates.center_xyz - centre, axis=1) <= nodule.diameter_mm / 2
                rows.append(
                    {
                        "series_uid": uid,
                        "diameter_mm": round(float(nodule.diameter_mm), 1),
                        "candidates": len(candidates),
                        "rank": int(rank[near].min()) if near.any() else None,
                    }
                )
    return rows


def synthetic(pairs: list[tuple[Path, Path]]) -> dict:
    ranks = [row | {"data_root": str(root)} for root, seg in pairs for row in nodule_ranks(root, seg)]
    found = [r["rank"] for r in ranks if r["rank"] is not None]
    return {
        "nodules": len(ranks),
        "with_a_candidate": len(found),
        "worst_rank": max(found, default=None),
        "worst_rank_4mm": max(
            (r["rank"] for r in ranks if r["rank"] is not None and r["diameter_mm"] >= 4), default=None
        ),
        "candidates_per_scan": sorted({(r["series_uid"], r["candidates"]) for r in ranks}),
        "ranks": ranks,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["real"]:
        print(json.dumps(real(tuple(int(v) for v in argv[1:]) or BUDGETS), indent=1))
        return 0
    if argv[:1] == ["synthetic"] and len(argv) > 1:
        pairs = [(Path(a.partition("=")[0]), Path(a.partition("=")[2])) for a in argv[1:]]
        print(json.dumps(synthetic(pairs), indent=1))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
