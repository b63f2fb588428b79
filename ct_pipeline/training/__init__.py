"""Training: the one loop behind `ct train-cls` and `ct train-seg`.

Read in this order:

1. ``config``      -- ``TrainConfig``: shared options and per-task sections, validated; ``TaskDefaults`` (the book's).
2. ``loop``        -- ``train(config)``: devices, DDP, precision, resume, the epoch loop.
3. ``tasks``       -- what differs per app: model, datasets, loss, metrics.
4. ``metrics``     -- precision/recall/F1/ROC AUC/confusion; pixel Dice; per-nodule recall.
5. ``state``       -- ``last.ckpt``/``best.ckpt`` and resuming.
6. ``distributed`` -- torchrun environment, reductions over ranks.
7. ``run_log``     -- TensorBoard, the per-epoch console line, progress.
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
