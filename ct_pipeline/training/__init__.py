"""Training: the one loop behind `ct train-cls` and `ct train-seg`.

Read in this order:

1. ``config``      -- ``TrainConfig``: shared options and per-task sections, validated; ``TaskDefaults`` (the book's).
2. ``loop``        -- ``train(config)``: devices, DDP, precision, resume, the stages of a run.
3. ``epoch``       -- ``run_epoch``: one pass over a loader; the per-epoch seeds.
4. ``tasks``       -- what differs per app: model, datasets, loss, metrics.
5. ``metrics``     -- precision/recall/F1/ROC AUC/confusion; pixel Dice; per-nodule recall.
6. ``state``       -- ``last.ckpt``/``best.ckpt`` and resuming.
7. ``distributed`` -- torchrun environment, reductions over ranks.
8. ``run_log``     -- TensorBoard, the per-epoch console line, progress.
9. ``command``     -- the `ct train-*` line that builds a config; each field's option name.
"""

from ct_pipeline.training.config import (
    TASKS,
    ClassificationTraining,
    MalignancyTraining,
    SegmentationTraining,
    TaskDefaults,
    TrainConfig,
)


def __getattr__(name: str):
    # The loop (and torch) load on first use: the CLI builds its help from the config alone.
    if name in ("TrainResult", "train"):
        from ct_pipeline.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TASKS",
    "ClassificationTraining",
    "MalignancyTraining",
    "SegmentationTraining",
    "TaskDefaults",
    "TrainConfig",
    "TrainResult",
    "train",
]
