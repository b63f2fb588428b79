"""The `ct train-*` command line that builds a given :class:`TrainConfig`, and each setting's option name.

How the recipe (:mod:`ct_pipeline.recipe`) turns its configs into the commands a user types, and
what messages call a setting: the one table from a config field to its `ct train-*` option.
Torch-free, as the configs are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ct_pipeline.datasets.augmentation_config import AugmentationConfig
from ct_pipeline.training.config import SECTIONS, TrainConfig, crop_spacing_text

# Config fields whose command-line option is not ``--`` + the field name with dashes.
_OPTION_OF_FIELD = {
    "data_roots": "--data-root",
    "out_dir": "--out",
    "task": "the command (train-cls, train-cls --malignancy or train-seg)",
    "augmentation": "the --aug-* options",
    "crop_spacing_mm": "--crop-spacing",
}
# Fields whose option takes one text that is not the value's own (a tuple as Z,Y,X, not repeated).
_TEXT_OF_FIELD = {"crop_spacing_mm": crop_spacing_text}
_COMMAND_OF_TASK = {"cls": ("train-cls",), "mal": ("train-cls", "--malignancy"), "seg": ("train-seg",)}
_AUGMENTATION_OPTIONS = {
    "mirror": "--aug-mirror",
    "shift_fraction": "--aug-shift",
    "scale_fraction": "--aug-scale",
    "rotation_deg": "--aug-rotate",
    "noise_hu": "--aug-noise",
    "noise_max_hu": "--aug-noise-max",
    "hu_scale_fraction": "--aug-hu-scale",
    "hu_offset_hu": "--aug-hu-offset",
    "kernel_probability": "--aug-kernel-probability",
    "blur_sigma_max_vox": "--aug-blur",
    "sharpen_amount_max": "--aug-sharpen",
}
# Rendered first, always: what the run starts from, where it reads and writes, and how long it is.
_SHOWN_FIRST = ("finetune", "data_roots", "cache_dir", "out_dir", "epochs", "epoch_size")
# Not one option per field.
_NOT_OPTIONS = ("task", "augmentation", "exclude_series")


def option_of_field(name: str) -> str:
    """The `ct train-*` option that sets TrainConfig field ``name`` (of any section), as a user types it."""
    return _OPTION_OF_FIELD.get(name, "--" + name.replace("_", "-"))


def flat_items(config: TrainConfig) -> Iterator[tuple[str, Any]]:
    """(field name, value) of the config and of its sections, in declaration order."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in SECTIONS:
            yield from ((inner.name, getattr(value, inner.name)) for inner in dataclasses.fields(value))
        else:
            yield field.name, value


def train_argv(config: TrainConfig) -> tuple[str, ...]:
    """The `ct` arguments (without ``ct``) that build ``config``: the command, where it reads and
    writes, its length, then every option that differs from the task's default.

    Raises:
        ValueError: ``config.exclude_series`` is set (the command line takes those as a file).
    """
    if config.exclude_series:
        raise ValueError("exclude_series is given to `ct train-*` as a file (--exclude-series FILE); render without it")
    argv: list[str] = [*_COMMAND_OF_TASK[config.task]]
    if config.malignancy.finetune is not None:  # what the malignancy run starts from: said with the command
        argv += ["--finetune", str(config.malignancy.finetune)]
    for root in config.data_roots:
        argv += ["--data-root", str(root)]
    if config.cache_dir is not None:
        argv += ["--cache-dir", str(config.cache_dir)]
    argv += ["--out", str(config.out_dir), "--epochs", str(config.epochs), "--epoch-size", str(config.epoch_size)]
    return (*argv, *changed_options(config))


def changed_options(config: TrainConfig) -> tuple[str, ...]:
    """The options of ``config`` that differ from its task's defaults, as `ct train-*` takes them
    (not those :func:`train_argv` puts first)."""
    defaults = dict(flat_items(TrainConfig.for_task(config.task, data_roots=config.data_roots, out_dir=config.out_dir)))
    argv: list[str] = []
    for name, value in flat_items(config):
        if name not in _SHOWN_FIRST + _NOT_OPTIONS and value != defaults[name]:
            text = _TEXT_OF_FIELD.get(name)
            argv += [option_of_field(name), text(value)] if text else _option(option_of_field(name), value)
    return (*argv, *_augmentation_argv(config.augmentation, defaults["augmentation"]))


def _augmentation_argv(augmentation: AugmentationConfig, default: AugmentationConfig) -> list[str]:
    if augmentation == AugmentationConfig.off() != default:
        return ["--no-augment"]
    argv: list[str] = []
    for name, option in _AUGMENTATION_OPTIONS.items():
        value = getattr(augmentation, name)
        if value != getattr(default, name):
            argv += _option(option, value)
    return argv


def _option(option: str, value: Any) -> list[str]:
    """``option`` with ``value`` as typed: a flag for a bool (``--no-`` for off), repeated for a tuple."""
    if isinstance(value, bool):
        return [option] if value else ["--no-" + option.removeprefix("--")]
    if isinstance(value, tuple):
        return [part for item in value for part in _option(option, item)]
    return [option, _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value) if isinstance(value, (Path, int, str)) else repr(value)
