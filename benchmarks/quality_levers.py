"""The `quality_levers` section of BENCHMARKS.md: one recipe change at a time against the recipe, on test sets.

    python -m benchmarks.quality_levers FAMILY:LABEL=OUT [FAMILY:LABEL=OUT ...]

e.g. ``standard:recipe=runs/base standard:own-share-0.25=runs/own25 site-b:recipe=runs/b ...``: each OUT
holds the ``quality.json`` of one ``benchmarks.quality --test-root`` run. The run labelled ``recipe``
in a family is that family's baseline: every other run of the family is reported against it,
test-set CPM first (choose on validation, report test), then sensitivity at 1/8 false positive per
scan and candidate recall on the test set, with the validation CPM in the note.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.common import Figure, Section
from benchmarks.run import write_benchmarks_md

BASELINE = "recipe"
CPM_TARGET = 0.85
SENSITIVITY_TARGET = 0.70


def _runs(argv: list[str]) -> dict[str, dict[str, dict]]:
    families: dict[str, dict[str, dict]] = {}
    for arg in argv:
        name, _, out = arg.partition("=")
        family, _, label = name.partition(":")
        if not (out and label):
            raise SystemExit(f"expected FAMILY:LABEL=OUT, got {arg!r}")
        run = json.loads((Path(out) / "quality.json").read_text())
        if "test" not in run:
            raise SystemExit(f"{out}/quality.json has no test block: run benchmarks.quality with --test-root")
        families.setdefault(family, {})[label] = run
    return families


def _cpm(block: dict) -> str:
    low, high = block["cpm_ci95"] or (None, None)
    return f"{block['cpm']:.3f}" + (f" ({low:.2f}-{high:.2f})" if low is not None else "")


def _sensitivity_at_eighth(block: dict) -> float:
    return block["sensitivity_at_fp_per_scan"]["0.125"]


def lever_figures(family: str, label: str, run: dict, baseline: dict | None) -> list[Figure]:
    test, base_test = run["test"], (baseline or {}).get("test")
    recall = test["candidate_recall"]["recall"]
    minutes = run["seconds"]["total"] / 60.0
    return [
        Figure(
            f"{family} / {label}: test-set CPM",
            round(test["cpm"], 3),
            "",
            round(base_test["cpm"], 3) if base_test and label != BASELINE else None,
            f"{family} / {BASELINE}" if base_test and label != BASELINE else "",
            round(test["cpm"] / base_test["cpm"], 3) if base_test and label != BASELINE and base_test["cpm"] else None,
            f">= {CPM_TARGET} (mean of 3 seeds)",
            None,
            f"test {_cpm(test)} over {test['scans']} scans, {test['nodules']} nodules, {test['detected']} found at any "
            f"rate; validation {_cpm(run['detection'])} over {run['detection']['scans']} scans; seed {run['seed']}; "
            f"recipe {minutes:.1f} min on a shared machine",
        ),
        Figure(
            f"{family} / {label}: test sensitivity at 1/8 FP per scan",
            round(_sensitivity_at_eighth(test), 3),
            "",
            round(_sensitivity_at_eighth(base_test), 3) if base_test and label != BASELINE else None,
            f"{family} / {BASELINE}" if base_test and label != BASELINE else "",
            None,
            f">= {SENSITIVITY_TARGET}",
            None,
            "at 1/4, 1, 8: "
            + ", ".join(f"{test['sensitivity_at_fp_per_scan'][rate]:.2f}" for rate in ("0.25", "1.0", "8.0")),
        ),
        Figure(
            f"{family} / {label}: test candidate recall (>= 4 mm)",
            round(recall, 3) if recall is not None else 0.0,
            "",
            note=f"{test['candidate_recall']['candidates_per_scan']} candidates per scan",
        ),
    ]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    families = _runs(argv)
    figures = []
    for family, runs in families.items():
        baseline = runs.get(BASELINE)
        for label in sorted(runs, key=lambda name: (name != BASELINE, name)):
            figures += lever_figures(family, label, runs[label], baseline)
    section = Section(
        key="quality_levers",
        title="Detection quality: the levers of #30 one at a time (python -m benchmarks.quality --test-root)",
        command="python -m benchmarks.quality --data-root DATA --out OUT --seed 0 --test-root TEST [LEVER]; "
        "python -m benchmarks.quality_levers FAMILY:LABEL=OUT ...",
        setup=(
            "per family: `ct synth DATA --series 40 --size medium --seed 0 [--style site-b]` for training and "
            "validation (every 4th series, 10 scans), `ct synth TEST --series 40 --size medium --seed 1000` as the "
            "independent test set; one seed (0); runs: "
            + "; ".join(f"{family}: {', '.join(runs)}" for family, runs in families.items())
        ),
        figures=figures,
        expectation="each lever a few hundredths of CPM at most on one seed; the intervals over 40 test scans "
        "are about +-0.1, so one seed can show a direction, not settle it",
    )
    section.save()
    write_benchmarks_md()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
