"""How far a diagnosis has got, for whoever shows it (the CLI's progress bar, a log).

The pipeline calls a :data:`StageProgress` function ``(stage, done, total)``: once with
``done = 0`` when a stage starts (``total`` = 0 when the stage has no count), and for the
U-Net and the classifiers after every batch, with ``done`` and ``total`` in slices or crops.
A batch wraps those calls into :class:`SeriesProgress` records naming the series. Calls come
from the thread that runs the diagnosis, never from the batch workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

StageProgress = Callable[[str, int, int], None]

# What the counted stages count, for display.
UNITS = {"segmentation": "slices", "classification": "candidates", "malignancy": "findings"}


def no_progress(stage: str, done: int, total: int) -> None:
    """The default: nobody is watching."""


@dataclass(frozen=True)
class SeriesProgress:
    """A stage of one series of a batch: ``position`` of ``n_series`` (1-based); see the module."""

    label: str
    position: int
    n_series: int
    stage: str
    done: int
    total: int

    @property
    def unit(self) -> str:
        return UNITS.get(self.stage, "")
