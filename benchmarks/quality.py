"""Detection quality of the recommended recipe on any LUNA16-layout folder: one JSON object.

    python -m benchmarks.quality --data-root DIR --out OUT [--val-stride 4] [--seed S]
    make quality DATA=DIR [OUT=...] [SEED=...]

Runs the recipe of :mod:`ct_pipeline.recipe` (the one `ct demo` and the README use) as the `ct`
commands a user types: fills the cache, trains the three models on DIR's training split,
diagnoses the validation split into ``OUT/findings.csv`` (LUNA16 submission format), evaluates
it, and prints the figures with the wall time of each step; they are also written to
``OUT/quality.json``. A second run in the same OUT reuses what the first left (finished models,
diagnosed series); use a fresh OUT for a fresh measurement.

``--hard-negatives`` adds the mining step (`ct hard-negatives`, `ct train-cls --extra-candidates`).
``--intensity-aug`` trains the three models with the intensity augmentation of other scanners
(``AugmentationConfig.scanner_robust``: HU calibration, noise level, soft and sharp kernels);
``--intensity-aug calibration,kernel`` adds only those parts, to measure each alone.

``--own-share F`` mines the U-Net's own candidates with labels on the training series
(`ct hard-negatives --with-positives`) and draws that fraction of every classifier batch from them
(`ct train-cls --own-candidates --own-share F`); the recommended recipe's default is 0.

``--tta N`` diagnoses (validation and test set) with N test-time flips (`ct diagnose --tta N`). In
an OUT diagnosed before with another N the series are diagnosed again (their results record N);
the trained models are reused.

``--test-root DIR`` then diagnoses and evaluates every series of DIR, an independent LUNA16-layout
folder, with the trained models (into ``OUT/test/``): the JSON's ``test`` block holds its CPM,
interval, sensitivities and candidate recall beside the validation figures. Choose between
recipes on validation; report test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.datasets.augmentation_config import SCANNER_PARTS
from ct_pipeline.diagnosis.config import CLASSIFIER_FLIPS
from ct_pipeline.errors import CtError
from ct_pipeline.recipe import (
    RECIPES,
    RecipeLayout,
    held_out_steps,
    held_out_summary,
    recipe_steps,
    recipe_summary,
    run_steps,
)
from ct_pipeline.run_lock import output_lock


def _run_to_stderr(argv) -> int:
    """`ct ARGV` in a fresh process, its output on stderr: stdout carries only the JSON."""
    return subprocess.run([sys.executable, "-m", "cli", *argv], stdout=sys.stderr.fileno(), check=False).returncode


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="LUNA16-layout folder (subset*/, the CSVs)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, the findings and quality.json")
    parser.add_argument("--cache-dir", type=Path, help="crop cache (default: OUT/cache)")
    parser.add_argument("--val-stride", type=int, default=4, help="every N-th series (by UID) is validation")
    parser.add_argument("--seed", type=int, default=0, help="training seed of all three models")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="recommended")
    parser.add_argument(
        "--hard-negatives", action="store_true", help="mine the U-Net's false positives for the classifier"
    )
    parser.add_argument(
        "--own-share",
        type=float,
        help="fraction of each classifier batch from the U-Net's own candidates (default: the recipe's)",
    )
    parser.add_argument(
        "--intensity-aug",
        nargs="?",
        const=",".join(SCANNER_PARTS),
        default="",
        metavar="PARTS",
        help="train with the intensity augmentation of other scanners: all of it, or the comma-separated "
        f"parts given ({', '.join(SCANNER_PARTS)})",
    )
    parser.add_argument(
        "--test-root", type=Path, help="independent LUNA16-layout folder to diagnose and evaluate afterwards"
    )
    parser.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=CLASSIFIER_FLIPS,
        help="test-time flips of the diagnose steps (ct diagnose --tta; 1: off)",
    )
    parser.add_argument(
        "--crop-spacing", help="the nodule classifier's crop spacing: auto, Z,Y,X in mm, or native (the default)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="scan resamples for the CPM's 95%% interval")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not (args.data_root / "annotations.csv").is_file():
        print(f"error: {args.data_root} has no annotations.csv; give a LUNA16-layout folder", file=sys.stderr)
        return 2
    if args.test_root is not None and not (args.test_root / "annotations.csv").is_file():
        print(
            f"error: --test-root {args.test_root} has no annotations.csv; give a LUNA16-layout folder", file=sys.stderr
        )
        return 2
    if args.test_root is not None and args.test_root.resolve() == args.data_root.resolve():
        print(f"error: --test-root {args.test_root} is the training data; give an independent folder", file=sys.stderr)
        return 2
    layout = RecipeLayout(args.data_root, args.cache_dir or args.out / "cache", args.out)
    recipe = RECIPES[args.recipe]
    if args.hard_negatives:
        recipe = dataclasses.replace(recipe, hard_negatives=True)
    if args.own_share is not None:
        if not 0.0 <= args.own_share <= 1.0:
            print(f"error: --own-share {args.own_share}: expected a fraction from 0 to 1", file=sys.stderr)
            return 2
        recipe = dataclasses.replace(recipe, own_share=args.own_share)
    parts = tuple(part.strip() for part in args.intensity_aug.split(",") if part.strip())
    unknown = sorted(set(parts) - set(SCANNER_PARTS))
    if unknown:
        print(f"error: --intensity-aug {unknown[0]!r} is not one of {', '.join(SCANNER_PARTS)}", file=sys.stderr)
        return 2
    if parts:
        recipe = dataclasses.replace(recipe, intensity_aug=parts)
    if args.crop_spacing is not None:
        recipe = dataclasses.replace(recipe, crop_spacing=args.crop_spacing)
    started = time.perf_counter()
    try:
        steps = recipe_steps(layout, recipe, args.val_stride, seed=args.seed, tta=args.tta)
    except CtError as err:  # a bad --crop-spacing, named by the config
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.test_root is not None:
        steps += held_out_steps(layout, args.test_root, tta=args.tta)
    # One run per --out: a second one would train into the same run folders (kill -9 frees it).
    with ExitStack() as held:
        try:
            held.enter_context(output_lock(args.out, "--out"))
            seconds = run_steps(
                steps, layout, args.val_stride, _run_to_stderr, announce=lambda line: print(line, file=sys.stderr)
            )
        except CtError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        seconds["total"] = round(time.perf_counter() - started, 1)
        summary = {
            "data_root": str(args.data_root),
            "out": str(args.out),
            "val_stride": args.val_stride,
            "seed": args.seed,
            "recipe": args.recipe,
            "hard_negatives": recipe.hard_negatives,
            "own_share": recipe.own_share,
            "intensity_aug": list(recipe.intensity_aug),
            "tta": args.tta,
            "crop_spacing": args.crop_spacing or "native",
            **recipe_summary(layout, bootstrap_samples=args.bootstrap),
            "seconds": seconds,
            "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}",
        }
        detection = summary["detection"]
        summary["cpm"], summary["cpm_ci95"] = detection["cpm"], detection["cpm_ci95"]
        if args.test_root is not None:
            summary["test"] = held_out_summary(layout, args.test_root, bootstrap_samples=args.bootstrap)
        atomic_write_text(args.out / "quality.json", json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
