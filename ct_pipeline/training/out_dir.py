"""A training run's ``--out`` folder: it replaces none of the run's inputs, and one run at a time holds it.

Under torchrun every rank calls :func:`ct_pipeline.training.train` with the same ``--out``; only
rank 0 takes the folder's lock (it is the rank that writes), and all ranks learn whether it got
it, so that a refused run ends on every rank with the same message instead of leaving the
others waiting at the first barrier.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ct_pipeline.errors import OutputError
from ct_pipeline.outputs import Place, data_root_places, refuse_overlaps
from ct_pipeline.run_lock import output_lock
from ct_pipeline.training.config import TrainConfig
from ct_pipeline.training.distributed import DistContext, all_gather_objects
from ct_pipeline.training.state import BEST, LAST

# What a run writes in --out. Not unreadable-series.txt: a refused run writes it, and the next run
# in the same --out reads it back as --exclude-series, as the refusal suggests.
RUN_WRITES = (LAST, BEST, "tensorboard/*", "logs/*", ".ct-run*.lock")


def check_inputs_kept(config: TrainConfig) -> None:
    """Refuse a run whose --out would overwrite what it reads (a --finetune checkpoint, a table).

    Raises:
        BadInputError: naming --out and the input's option.
    """
    inputs = [
        *data_root_places(config.data_roots),
        *(Place("--extra-candidates", p) for p in config.classification.extra_candidates),
        *(Place("--own-candidates", p) for p in config.classification.own_candidates),
    ]
    if config.malignancy.finetune is not None:
        inputs.append(Place("--finetune", config.malignancy.finetune))
    refuse_overlaps([Place("--out", config.out_dir, RUN_WRITES)], inputs)


@contextmanager
def hold_out_dir(config: TrainConfig, ctx: DistContext) -> Iterator[None]:
    """Rank 0 holds --out's run lock for the block; every rank raises if it could not.

    Raises:
        OutputError: another run holds the folder (its pid named).
    """
    with ExitStack() as held:
        refusal: str | None = None
        if ctx.is_main:
            try:
                held.enter_context(output_lock(config.out_dir, "--out"))
            except OutputError as err:
                refusal = str(err)
        refusals = all_gather_objects(refusal, ctx)  # every rank takes part, so none waits alone
        if refusals[0] is not None:
            raise OutputError(refusals[0])
        yield
