"""The recommended training recipe, as the configs of its three runs: one source of truth.

`ct demo` runs it on data it synthesises, ``python -m benchmarks.quality`` on any LUNA16-layout
folder, and the README prints it. Each run is a :class:`~ct_pipeline.training.TrainConfig`; the
`ct` command lines a user would type, and that `ct demo` runs, are rendered from those configs
(:func:`~ct_pipeline.training.command.train_argv`). Steps: fill the cache, train the U-Net, mine
its false positives on the training series (``ct hard-negatives``; off in the recommended recipe,
see below), or its own candidates with labels (``--with-positives``, when ``own_share`` > 0),
train the nodule classifier (with them as extra negatives, or a fixed share of each batch from
its own candidates), fine-tune it for
malignancy, diagnose the validation series, evaluate (LUNA16 FROC).
:func:`held_out_steps` add an independent test set: diagnosed and evaluated with the trained models.

Every step reuses what an earlier run left: finished training runs resume to "already trained",
the hard negatives are kept, diagnosed series are skipped.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.errors import BadInputError, CtError
from ct_pipeline.training.command import train_argv
from ct_pipeline.training.config import (
    ClassificationTraining,
    MalignancyTraining,
    SegmentationTraining,
    TaskDefaults,
    TrainConfig,
)

# Where a recipe's configs are written for, until recipe_steps places them in a RecipeLayout.
_DATA, _RUNS = (Path("DATA"),), Path("OUT") / "runs"


@dataclass(frozen=True)
class Recipe:
    """The recipe's three training runs (data, cache, out folder, --val-stride, --seed and
    --resume are set where it runs, by :func:`recipe_steps`); ``hard_negatives`` adds the mining
    step (`ct hard-negatives`, then `ct train-cls --extra-candidates`); ``own_share`` > 0 mines
    the U-Net's own candidates with labels (`ct hard-negatives --with-positives`) and draws that
    share of every classifier batch from them (`ct train-cls --own-candidates --own-share`);
    ``intensity_aug`` trains all three with those parts of
    :meth:`~ct_pipeline.datasets.AugmentationConfig.scanner_robust` ("calibration", "noise",
    "kernel": other scanners' HU calibration, noise level and kernel; empty: none)."""

    seg: TrainConfig
    cls: TrainConfig
    mal: TrainConfig
    hard_negatives: bool = False
    own_share: float = 0.0
    intensity_aug: tuple[str, ...] = ()
    # The nodule classifier's `--crop-spacing` ("auto", "Z,Y,X" or None: the recipe's own, native);
    # the malignancy fine-tune inherits it. Off until measured (#30).
    crop_spacing: str | None = None


# Own candidates (own_share) are off until 0/25/50 % are measured (#30, item 4).
# Hard negatives are off: on the demo's data and models they lowered the CPM from 0.646 to 0.583
# (the classifier grew stricter on small round blobs, and small nodules fell; see #20's notes).
# What learns in minutes on a CPU (README, "What to expect"): a cross-entropy term beside the
# book's Dice loss with false negatives weighted 2x rather than 8x, the classifier's centre head,
# Adam, small batches, the whole network fine-tuned for malignancy, and validation only at the
# end (it costs as much as an epoch).
def _fast_seg(epochs: int, epoch_size: int, workers: int, val_every: int = 1) -> TrainConfig:
    return TrainConfig.for_task(
        "seg",
        data_roots=_DATA,
        out_dir=_RUNS / "seg",
        epochs=epochs,
        epoch_size=epoch_size,
        workers=workers,
        val_every=val_every,
        segmentation=SegmentationTraining(bce_loss_weight=1.0, fn_loss_weight=2.0),
    )


def _fast_cls(epochs: int, epoch_size: int, workers: int, val_every: int = 1) -> TrainConfig:
    return TrainConfig.for_task(
        "cls",
        data_roots=_DATA,
        out_dir=_RUNS / "cls",
        epochs=epochs,
        epoch_size=epoch_size,
        workers=workers,
        val_every=val_every,
        optimizer="adam",
        lr=1e-3,
        batch_size=16,
        classification=ClassificationTraining(centre_head=True),
    )


def _mal(
    epochs: int, epoch_size: int, workers: int, depth: int = MalignancyTraining.finetune_depth, **shared
) -> TrainConfig:
    """The malignancy fine-tune of the recipe's nodule classifier; ``shared``: TrainConfig options."""
    return TrainConfig.for_task(
        "mal",
        data_roots=_DATA,
        out_dir=_RUNS / "mal",
        epochs=epochs,
        epoch_size=epoch_size,
        workers=workers,
        malignancy=MalignancyTraining(finetune=_RUNS / "cls" / "best.ckpt", finetune_depth=depth),
        **shared,
    )


RECIPES = {
    # The recommended recipe: about 20 minutes on a 2-core CPU for 40-60 series of 256x256.
    "recommended": Recipe(
        seg=_fast_seg(10, 1600, workers=1, val_every=10),
        cls=_fast_cls(12, 960, workers=1, val_every=12),
        # No scale augmentation for malignancy: it rescales the nodule by up to 20 %, and size is the strongest cue.
        mal=_mal(
            8,
            320,
            workers=1,
            depth=6,
            optimizer="adam",
            lr=1e-3,
            batch_size=16,
            augmentation=dataclasses.replace(TaskDefaults.malignancy().augmentation, scale_fraction=0.0),
        ),
    ),
    # Every step on a handful of tiny series, in seconds (the smoke test of `make test`).
    "tiny": Recipe(seg=_fast_seg(1, 32, workers=0), cls=_fast_cls(1, 64, workers=0), mal=_mal(1, 32, workers=0)),
}


@dataclass(frozen=True)
class RecipeLayout:
    """Where a recipe run reads and writes: the data root, the cache (None: the default one) and the run's folder."""

    data_root: Path
    cache_dir: Path | None
    out_dir: Path

    @property
    def runs(self) -> Path:
        return self.out_dir / "runs"

    @property
    def val_series(self) -> Path:
        return self.out_dir / "val_series.txt"

    @property
    def hard_negatives(self) -> Path:
        return self.runs / "hard_negatives.csv"

    @property
    def own_candidates(self) -> Path:
        """The U-Net's candidates on the training series with labels (``ct hard-negatives --with-positives``)."""
        return self.runs / "own_candidates.csv"

    @property
    def findings_csv(self) -> Path:
        return self.out_dir / "findings.csv"

    def best(self, model: str) -> Path:
        return self.runs / model / "best.ckpt"

    @property
    def test_dir(self) -> Path:
        """Where an independent test set's findings and FROC go (``benchmarks.quality --test-root``)."""
        return self.out_dir / "test"


@dataclass(frozen=True)
class RecipeStep:
    """One `ct` command of the recipe (``argv`` without the leading `ct`); ``config``: a training
    step's run, which ``argv`` builds."""

    name: str
    argv: tuple[str, ...]
    config: TrainConfig | None = None

    @property
    def command_line(self) -> str:
        """The step as a user types it in a shell."""
        return f"ct {shlex.join(self.argv)}"


def recipe_configs(layout: RecipeLayout, recipe: Recipe, val_stride: int, seed: int = 0) -> dict[str, TrainConfig]:
    """The recipe's training runs ("seg", "cls", "mal") placed in ``layout``, given what is already there."""

    def placed(name: str, config: TrainConfig) -> TrainConfig:
        run_dir = layout.runs / name
        if recipe.intensity_aug:
            config = config.replace(augmentation=config.augmentation.scanner_robust(recipe.intensity_aug))
        return config.replace(
            data_roots=(layout.data_root,),
            cache_dir=layout.cache_dir,
            out_dir=run_dir,
            run_name="",
            val_stride=val_stride,
            seed=seed,
            resume=(run_dir / "last.ckpt").is_file(),  # finished: "already trained"; killed: continues
        )

    cls = placed("cls", recipe.cls)
    if recipe.crop_spacing is not None:
        cls = cls.replace(classification=dataclasses.replace(cls.classification, crop_spacing_mm=recipe.crop_spacing))
    if recipe.hard_negatives:
        mined = dataclasses.replace(cls.classification, extra_candidates=(layout.hard_negatives,))
        cls = cls.replace(classification=mined)
    if recipe.own_share > 0:
        own = dataclasses.replace(
            cls.classification, own_candidates=(layout.own_candidates,), own_share=recipe.own_share
        )
        cls = cls.replace(classification=own)
    mal = placed("mal", recipe.mal)
    mal = mal.replace(malignancy=dataclasses.replace(mal.malignancy, finetune=layout.best("cls")))
    return {"seg": placed("seg", recipe.seg), "cls": cls, "mal": mal}


def recipe_steps(
    layout: RecipeLayout, recipe: Recipe, val_stride: int, seed: int = 0, report: bool = False, tta: int = 1
) -> list[RecipeStep]:
    """The recipe's `ct` commands for ``layout``, given what is already there; ``tta``: the
    diagnosis' test-time flips (``ct diagnose --tta``; 1, off, leaves the option out)."""
    common = ("--data-root", str(layout.data_root))
    if layout.cache_dir is not None:
        common += ("--cache-dir", str(layout.cache_dir))
    runs = recipe_configs(layout, recipe, val_stride, seed)

    def train(name: str) -> RecipeStep:
        return RecipeStep(f"train-{name}", train_argv(runs[name]), runs[name])

    steps = [RecipeStep("prepcache", ("prepcache", *common, "--workers", "2")), train("seg")]

    def mine(name: str, out: Path, *flags: str) -> RecipeStep:
        seg = ("--seg-model", str(layout.best("seg")))
        return RecipeStep(
            name, ("hard-negatives", *flags, *seg, *common, "--val-stride", str(val_stride), "--out", str(out))
        )

    if recipe.hard_negatives and not layout.hard_negatives.is_file():
        steps.append(mine("hard-negatives", layout.hard_negatives))
    if recipe.own_share > 0 and not layout.own_candidates.is_file():
        steps.append(mine("own-candidates", layout.own_candidates, "--with-positives"))
    steps += [train("cls"), train("mal")]
    out = layout.out_dir
    steps.append(
        RecipeStep(
            "diagnose",
            (
                "diagnose",
                *common,
                "--series-file",
                str(layout.val_series),
                "--seg-model",
                str(layout.best("seg")),
                "--cls-model",
                str(layout.best("cls")),
                "--mal-model",
                str(layout.best("mal")),
                "--out",
                str(out / "findings"),
                "--csv",
                str(layout.findings_csv),
                *(("--report", str(out / "report")) if report else ()),
                *_tta_option(tta),
                "--threshold",
                "0.9",  # what the table and the report show; the CSV (and so the FROC) keeps every candidate
            ),
        )
    )
    steps.append(
        RecipeStep(
            "evaluate",
            (
                "evaluate",
                str(layout.findings_csv),
                "--annotations",
                str(layout.data_root / "annotations.csv"),
                "--series-file",
                str(layout.val_series),
                "--plot",
                str(out / "froc.png"),
                "--bootstrap",
                "200",
            ),
        )
    )
    return steps


def _tta_option(tta: int) -> tuple[str, ...]:
    """``ct diagnose``'s test-time flips option; none at 1 (off), so the default command lines stay as they were."""
    return () if tta == 1 else ("--tta", str(tta))


def held_out_steps(layout: RecipeLayout, test_root: Path, tta: int = 1) -> list[RecipeStep]:
    """Diagnose and evaluate every series of ``test_root`` (a LUNA16-layout folder never trained
    or validated on) with the recipe's trained models, into ``layout.test_dir``; ``tta`` as in
    :func:`recipe_steps`."""
    test = layout.test_dir
    common = ("--data-root", str(test_root), "--cache-dir", str(test / "cache"))
    return [
        RecipeStep(
            "test-diagnose",
            (
                "diagnose",
                *common,
                "--series-file",
                str(test / "series.txt"),
                "--seg-model",
                str(layout.best("seg")),
                "--cls-model",
                str(layout.best("cls")),
                "--out",
                str(test / "findings"),
                "--csv",
                str(test / "findings.csv"),
                *_tta_option(tta),
                "--threshold",
                "0.9",
            ),
        ),
        RecipeStep(
            "test-evaluate",
            (
                "evaluate",
                str(test / "findings.csv"),
                "--annotations",
                str(test_root / "annotations.csv"),
                "--series-file",
                str(test / "series.txt"),
                "--plot",
                str(test / "froc.png"),
                "--bootstrap",
                "200",
            ),
        ),
    ]


def write_held_out_series(layout: RecipeLayout, test_root: Path) -> Path:
    """Every series of ``test_root``, one per line, in ``layout.test_dir``."""
    from ct_pipeline.catalog import open_catalog

    path = layout.test_dir / "series.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, "".join(f"{uid}\n" for uid in open_catalog([test_root], layout.test_dir / "cache").series_uids)
    )
    return path


def write_val_series(layout: RecipeLayout, val_stride: int) -> Path:
    """The validation series of the training split (every ``val_stride``-th by UID), one per line."""
    from ct_pipeline.catalog import open_catalog

    val = open_catalog([layout.data_root], layout.cache_dir).split(val_stride)[1]
    atomic_write_text(layout.val_series, "".join(f"{uid}\n" for uid in val))
    return layout.val_series


Runner = Callable[[Sequence[str]], int]


def run_steps(
    steps: Sequence[RecipeStep],
    layout: RecipeLayout,
    val_stride: int,
    runner: Runner,
    announce: Callable[[str], None] = print,
    what: str = "recipe",
) -> dict[str, float]:
    """Run ``steps`` in order; returns each step's wall time (s). Raises CtError naming a failed step."""
    layout.out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for step in steps:
        if step.name == "diagnose":
            write_val_series(layout, val_stride)
        if step.name == "test-diagnose":
            write_held_out_series(layout, Path(step.argv[step.argv.index("--data-root") + 1]))
        announce(f"$ ct {' '.join(step.argv)}")
        start = time.perf_counter()
        code = runner(step.argv)
        seconds[step.name] = round(time.perf_counter() - start, 1)
        if code != 0:
            raise CtError(f"{what} step `ct {step.name}` failed with exit code {code}; see its output above")
    return seconds


def _best_val_metrics(checkpoint: Path, kind: str) -> dict[str, float]:
    from ct_pipeline.models.checkpoints import load_checkpoint  # torch: only when summarising

    return dict(load_checkpoint(checkpoint, kind).metrics.get("val", {}))


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def candidate_recall(
    findings_csv: Path, annotations_csv: Path, series_uids: Sequence[str], min_diameter_mm: float = 4.0
) -> dict:
    """Share of annotated nodules >= ``min_diameter_mm`` in ``series_uids`` with any finding (of
    any probability, no cap) within their radius: what the U-Net and the grouping let through."""
    import numpy as np

    from ct_pipeline.luna16 import read_annotations, read_findings_frame

    nodules = read_annotations(annotations_csv)
    nodules = nodules[nodules["series_uid"].isin(set(series_uids)) & (nodules["diameter_mm"] >= min_diameter_mm)]
    findings = read_findings_frame(findings_csv)
    by_series = {
        uid: group[["coordX", "coordY", "coordZ"]].to_numpy(np.float64) for uid, group in findings.groupby("seriesuid")
    }
    found = 0
    for row in nodules.itertuples():
        centers = by_series.get(row.series_uid)
        center = np.array([row.center_x_mm, row.center_y_mm, row.center_z_mm])
        found += centers is not None and bool((np.linalg.norm(centers - center, axis=1) <= row.diameter_mm / 2).any())
    per_scan = len(findings[findings["seriesuid"].isin(set(series_uids))]) / max(len(series_uids), 1)
    return {
        "recall": found / len(nodules) if len(nodules) else None,
        "nodules": len(nodules),
        "found": found,
        "min_diameter_mm": min_diameter_mm,
        "candidates_per_scan": round(per_scan, 1),
    }


def recipe_summary(layout: RecipeLayout, bootstrap_samples: int = 0) -> dict:
    """The figures of a finished recipe run: each model's validation metrics (best checkpoint), the
    LUNA16 FROC of the diagnosed validation series (by size, with a bootstrap interval when
    ``bootstrap_samples`` > 0) and the candidate recall.

    Raises:
        BadInputError: a model or the findings are missing.
    """
    missing = [layout.best(k) for k in ("seg", "cls", "mal") if not layout.best(k).is_file()]
    if missing or not layout.findings_csv.is_file():
        raise BadInputError(
            f"{layout.out_dir} holds no finished run (missing {missing[0] if missing else layout.findings_csv}); run it first"
        )
    seg, cls, mal = (_best_val_metrics(layout.best(k), k) for k in ("seg", "cls", "mal"))
    val_series = [line.strip() for line in layout.val_series.read_text().splitlines() if line.strip()]
    return {
        "segmentation": {
            "nodule_recall_4mm": _number(seg.get("nodule_recall_4mm")),
            "nodules": _number(seg.get("nodules")),
            "pixel_precision": _number(seg.get("precision")),
            "pixel_recall": _number(seg.get("recall")),
            "dice": _number(seg.get("dice")),
        },
        "nodule_classifier": {"roc_auc": _number(cls.get("roc_auc")), "f1": _number(cls.get("f1"))},
        "malignancy_classifier": {
            "roc_auc": _number(mal.get("roc_auc")),
            "size_only_auc": _number(mal.get("size_auc")),
            "size_threshold_auc": _number(mal.get("size_threshold_auc")),
            "size_threshold_mm": _number(mal.get("size_threshold_mm")),
        },
        "detection": detection_summary(
            layout.findings_csv, layout.data_root / "annotations.csv", layout.val_series, bootstrap_samples
        ),
        "candidate_recall": candidate_recall(layout.findings_csv, layout.data_root / "annotations.csv", val_series),
    }


def detection_summary(findings_csv: Path, annotations_csv: Path, series_file: Path, bootstrap_samples: int = 0) -> dict:
    """LUNA16 FROC of ``findings_csv`` over the scans of ``series_file``: CPM (with a bootstrap
    interval when ``bootstrap_samples`` > 0), sensitivities, and the same by nodule size."""
    from ct_pipeline.evaluation.froc import FrocConfig, evaluate_froc_files

    report = evaluate_froc_files(
        findings_csv,
        annotations_csv,
        series_file=series_file,
        config=FrocConfig(bootstrap_samples=bootstrap_samples, by_size=True),
    )
    froc = report.overall
    return {
        "cpm": _number(froc.cpm),
        "cpm_ci95": report.to_dict()["cpm_ci95"],
        "nodules": froc.n_nodules,
        "detected": froc.n_detected,
        "scans": report.n_scans,
        "sensitivity_at_fp_per_scan": dict(zip((str(r) for r in froc.fp_rates), map(_number, froc.sensitivity))),
        "by_size": {
            group.label: {"nodules": group.n_nodules, "detected": group.n_detected, "cpm": _number(group.cpm)}
            for group in report.by_size
        },
    }


def held_out_summary(layout: RecipeLayout, test_root: Path, bootstrap_samples: int = 0) -> dict:
    """The figures of an independent test set diagnosed by :func:`held_out_steps`: the detection block
    of :func:`recipe_summary` and the candidate recall, over every series of ``test_root``.

    Raises:
        BadInputError: the test set was not diagnosed.
    """
    test = layout.test_dir
    if not (test / "findings.csv").is_file():
        raise BadInputError(
            f"{test} holds no diagnosed test set (no findings.csv); run the recipe with --test-root first"
        )
    series = [line.strip() for line in (test / "series.txt").read_text().splitlines() if line.strip()]
    annotations = test_root / "annotations.csv"
    return {
        "data_root": str(test_root),
        **detection_summary(test / "findings.csv", annotations, test / "series.txt", bootstrap_samples),
        "candidate_recall": candidate_recall(test / "findings.csv", annotations, series),
    }
