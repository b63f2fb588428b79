"""Training: the one loop behind `ct train-cls` and `ct train-seg`.

Read in this order:

1. ``config``      -- ``TrainConfig``: every option, validated; per-app defaults (the book's).
2. ``loop``        -- ``train(config)``: devices, DDP, precision, resume, the epoch loop.
3. ``tasks``       -- what differs per app: model, datasets, loss, metrics.
4. ``metrics``     -- precision/recall/F1/ROC AUC/confusion; pixel Dice; per-nodule recall.
5. ``state``       -- ``last.ckpt``/``best.ckpt`` and resuming.
6. ``distributed`` -- torchrun environment, reductions over ranks.
7. ``run_log``     -- TensorBoard, the per-epoch console line, progress.
"""

from ct_pipeline.training.config import TASK_DEFAULTS, TASKS, TrainConfig
from ct_pipeline.training.loop import TrainResult, train

__all__ = ["TASKS", "TASK_DEFAULTS", "TrainConfig", "TrainResult", "train"]
