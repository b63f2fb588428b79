"""`ct demo`: the whole pipeline on synthetic data, as the `ct` commands a user would type.

`ct synth`, then the recommended recipe (:mod:`ct_pipeline.recipe`: its training configs, rendered
as the `ct` command lines that build them);
:func:`run_demo` runs them through the runner it is given (`ct demo`: a fresh process per step,
exactly as a user would), and every step reuses what an earlier run left behind. The figures it reaches are
gathered by :func:`demo_summary` into ``OUT/summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.recipe import (
    RECIPES,
    Recipe,
    RecipeLayout,
    RecipeStep,
    Runner,
    recipe_steps,
    recipe_summary,
    run_steps,
)
from ct_pipeline.run_lock import output_lock


@dataclass(frozen=True)
class DemoScale:
    """How much data the demo makes and which :class:`~ct_pipeline.recipe.Recipe` trains on it."""

    series: int
    size: str
    seed: int
    val_stride: int
    recipe: Recipe


DEMO_SCALES = {
    # About 15 minutes on a 2-core CPU from a fresh clone (the venv install included).
    "default": DemoScale(series=60, size="medium", seed=0, val_stride=4, recipe=RECIPES["recommended"]),
    # The smoke test in `make test`: every step on a handful of tiny series, in seconds.
    "tiny": DemoScale(series=6, size="small", seed=2, val_stride=3, recipe=RECIPES["tiny"]),
}


def demo_layout(out_dir: Path) -> RecipeLayout:
    return RecipeLayout(data_root=out_dir / "data", cache_dir=out_dir / "cache", out_dir=out_dir)


def demo_steps(out_dir: Path, scale: DemoScale) -> list[RecipeStep]:
    """The demo's `ct` commands in ``out_dir``, given what is already there: `ct synth`, then the recipe."""
    layout = demo_layout(out_dir)
    steps: list[RecipeStep] = []
    if not (layout.data_root / "candidates.csv").is_file():
        steps.append(
            RecipeStep(
                "synth",
                (
                    "synth",
                    str(layout.data_root),
                    "--series",
                    str(scale.series),
                    "--size",
                    scale.size,
                    "--seed",
                    str(scale.seed),
                    "--overwrite",
                ),
            )
        )
    return steps + recipe_steps(layout, scale.recipe, scale.val_stride, report=True)


def run_demo(
    out_dir: Path,
    scale: DemoScale,
    runner: Runner,
    announce: Callable[[str], None] = print,
) -> dict:
    """Run the demo in ``out_dir`` (reusing what is there) through ``runner`` (`ct demo` passes
    one that starts `ct ARGV` as a fresh process, as a user's shell would); returns :func:`demo_summary`.

    Raises CtError naming the step when a step fails.
    """
    layout = demo_layout(out_dir)
    # One demo per folder; its steps lock their own sub-folders (runs/<model>, findings/), never this one.
    with output_lock(out_dir, "--out"):
        run_steps(demo_steps(out_dir, scale), layout, scale.val_stride, runner, announce, what="demo")
        summary = demo_summary(out_dir)
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def demo_summary(out_dir: Path) -> dict:
    """The figures of a finished demo (:func:`~ct_pipeline.recipe.recipe_summary`) and where the outputs are."""
    layout = demo_layout(out_dir)
    summary = recipe_summary(layout)
    summary["outputs"] = {
        "report": str(out_dir / "report" / "index.html"),
        "froc_plot": str(out_dir / "froc.png"),
        "tensorboard": f"tensorboard --logdir {layout.runs}",
        "checkpoints": str(layout.runs / "*" / "best.ckpt"),
        "findings_csv": str(layout.findings_csv),
    }
    return summary
