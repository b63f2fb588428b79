"""The generator's random streams, by name: every draw in ``ct synth`` comes from one of these.

A stream is ``np.random.default_rng([seed, index, number])`` for one series (``index``: its
0-based position) or ``[seed, number]`` for the whole data set. Each purpose has its own stream so
that changing one (say, the vessels) leaves every other draw, and so every other byte, as it was.

Adding a stream: give it the next free number (14 now; 7 was never used and may stay so), use it
through :func:`series_rng` or :func:`dataset_rng`, and never renumber or reuse one: the numbers are
part of every data set already written (``tests/synth/test_digest.py`` pins one). ``@unique``
refuses a number given twice.
"""

from __future__ import annotations

import enum

import numpy as np


@enum.unique
class Stream(enum.IntEnum):
    """Stream numbers. Series streams are drawn per series; data-set streams once per data set."""

    # Per series (seed, index, number)
    LAYOUT = 1  # grid size, spacing, origin, direction (synth/config.py: plan_series)
    ANATOMY = 2  # body, bones, organs, lungs and their densities (synth/phantom.py)
    VESSELS = 3  # vessel trees (synth/vessels.py)
    NODULES = 4  # nodule count, sizes, shapes, places, reader ratings (synth/nodules.py)
    CANDIDATES = 5  # LUNA16-like candidate list (synth/candidates.py)
    NOISE = 6  # image noise of the series
    STYLE_ANATOMY = 8  # a non-standard style's densities and noise level (synth/style.py)
    STYLE_NODULES = 9  # a non-standard style's nodule textures and places
    STYLE_KERNEL = 10  # a non-standard style's reconstruction kernel and HU calibration
    FOLLOW_UP_PLAN = 11  # the follow-up's pose, interval and nodule changes (synth/followup.py)
    FOLLOW_UP_NODULES = 12  # the follow-up's new nodules
    FOLLOW_UP_NOISE = 13  # the follow-up scan's own image noise
    UID_DIGITS = 7919  # a series' UID digits (a large prime: from before the registry)
    # Per data set (seed, number)
    DIRECTION_ORDER = 104729  # which series are oblique or flipped


DATASET_STREAMS = frozenset({Stream.DIRECTION_ORDER})


def series_rng(seed: int, index: int, stream: Stream) -> np.random.Generator:
    """The generator of one series' ``stream`` (``index``: the series' 0-based position)."""
    if stream in DATASET_STREAMS:
        raise ValueError(f"{stream.name} is drawn once per data set: use dataset_rng")
    return np.random.default_rng([seed, index, int(stream)])


def dataset_rng(seed: int, stream: Stream) -> np.random.Generator:
    """The generator of a data-set-wide ``stream``."""
    if stream not in DATASET_STREAMS:
        raise ValueError(f"{stream.name} is drawn per series: use series_rng")
    return np.random.default_rng([seed, int(stream)])
