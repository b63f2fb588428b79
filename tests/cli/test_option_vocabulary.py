"""One word, one meaning: every option of every `ct` command, checked against a declared vocabulary.

A user who learns ``--threads`` in one command guesses it in the next; so each option name is
declared once below with its meaning, and the test fails when a command uses an undeclared name, when
one name's help says something other than its meaning (``--workers`` counting threads), when a shared
option is redefined with other help, or when two names are declared with one meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import typer

from cli import dicomweb_options, options
from cli.main import app


@dataclass(frozen=True)
class Meaning:
    """What an option name means in every command.

    Attributes:
        text: the meaning, in words; unique across :data:`MEANINGS`.
        says: a phrase its help must contain wherever it appears (case-insensitive), when the
            wording may differ between commands but the meaning may not.
        shared: the option type in :mod:`cli.options` that every command must use as it is (same help).
    """

    text: str
    says: str | None = None
    shared: object = None


MEANINGS: dict[str, Meaning] = {
    # The decided vocabulary (#27): one name per meaning.
    "--threads": Meaning("CPU threads the command may use (training: per rank)", says="CPU threads"),
    "--workers": Meaning("processes working side by side (prepcache, DataLoader)", says="process"),
    "--concurrent-batches": Meaning("diagnosis batches run side by side, one thread each"),
    "--threshold": Meaning(
        "nodule probability that makes a candidate a finding", "nodule probability", options.ThresholdOption
    ),
    "--seg-threshold": Meaning("U-Net probability that makes a pixel nodule", says="pixel"),
    "--device": Meaning("the device: cpu, cuda, cuda:N, mps or auto", says="cuda:N", shared=options.DeviceOption),
    "--seg-model": Meaning("segmentation U-Net file", shared=options.SegModelOption),
    "--cls-model": Meaning("nodule classifier file", shared=options.ClsModelOption),
    "--mal-model": Meaning("malignancy classifier file", shared=options.MalModelOption),
    "--runs-dir": Meaning("where training runs are (for the default models)", shared=options.RunsDirOption),
    "--trust-model": Meaning("run TorchScript that ct did not write", shared=options.TrustModelOption),
    "--data-root": Meaning("folders of CT series", shared=options.DataRootsOption),
    "--cache-dir": Meaning("the crop cache folder", shared=options.CacheDirOption),
    "--json": Meaning("JSON on stdout instead of tables", shared=options.JsonOption),
    "--quiet": Meaning("no progress display", shared=options.QuietOption),
    "--allow-uneven-spacing": Meaning("resample DICOM series with gaps", shared=options.AllowUnevenOption),
    # Everything else, each with its one meaning.
    "--all": Meaning("every series under the data roots"),
    "--max-candidates": Meaning("how many candidates per scan are classified"),
    "--tta": Meaning("mirrored copies of each crop the classifiers average over", says="mirrored"),
    "--dicomweb": Meaning("a DICOMweb server to read series from", shared=dicomweb_options.DicomwebOption),
    "--ca-bundle": Meaning(
        "certificate authorities for an https DICOMweb server", shared=dicomweb_options.CaBundleOption
    ),
    "--store": Meaning("send the SEG and SR to the DICOMweb server"),
    "--modality": Meaning("which modality the DICOMweb query asks for"),
    "--study-date": Meaning("which study dates the DICOMweb query asks for"),
    "--allow-mixed": Meaning("merge results made in different ways"),
    "--annotations": Meaning("known nodules (a LUNA16 annotations CSV)"),
    "--aug-mirror": Meaning("augmentation: random flips"),
    "--aug-noise": Meaning("augmentation: noise, HU"),
    "--aug-noise-max": Meaning("augmentation: largest per-sample noise, HU", says="HU"),
    "--aug-hu-scale": Meaning("augmentation: HU calibration slope change", says="calibration"),
    "--aug-hu-offset": Meaning("augmentation: HU calibration offset", says="calibration"),
    "--aug-kernel-probability": Meaning("augmentation: share of samples with another kernel", says="kernel"),
    "--aug-blur": Meaning("augmentation: soft kernel blur, voxels", says="blur"),
    "--aug-sharpen": Meaning("augmentation: sharp kernel unsharp mask", says="unsharp"),
    "--aug-rotate": Meaning("augmentation: rotation, degrees"),
    "--aug-scale": Meaning("augmentation: magnification change"),
    "--aug-shift": Meaning("augmentation: shift"),
    "--background-share": Meaning("share of U-Net training crops without a nodule"),
    "--balance-ratio": Meaning("negatives per positive in training epochs"),
    "--batch-size": Meaning("items per batch of the command's network"),
    "--bce-loss-weight": Meaning("U-Net BCE loss weight"),
    "--block-batchnorm": Meaning("classifier: BatchNorm after every convolution"),
    "--book-style": Meaning("diagnose as the book's code does"),
    "--bootstrap": Meaning("FROC bootstrap resamples"),
    "--by-size": Meaning("FROC by nodule size"),
    "--centre-head": Meaning("classifier head sees the central cells"),
    "--crop-spacing": Meaning("classifier crops: voxel spacing in mm, auto or native", says="mm"),
    "--channels-last": Meaning("channels-last memory format"),
    "--cls-batch-size": Meaning("crops per classifier batch"),
    "--cls-precision": Meaning("the classifiers' precision"),
    "--csv": Meaning("a LUNA16 CSV of every candidate to write"),
    "--current-results": Meaning("the later scan's earlier findings"),
    "--prior-results": Meaning("the earlier scan's earlier findings"),
    "--debug": Meaning("tracebacks on errors"),
    "--verbose": Meaning("log details to stderr"),
    "--dicom": Meaning("also write synthetic series as DICOM"),
    "--dicom-out": Meaning("folder for DICOM SEG and SR of the findings"),
    "--epoch-size": Meaning("training samples per epoch"),
    "--epochs": Meaning("training epochs in all"),
    "--evaluate": Meaning("confusion table against known nodules"),
    "--exclude-series": Meaning("series to leave out of training"),
    "--excluded": Meaning("findings that count neither way (LUNA16 excluded)"),
    "--extra-candidates": Meaning("more negative candidates for training"),
    "--finetune": Meaning("checkpoint to fine-tune from"),
    "--finetune-depth": Meaning("blocks to fine-tune"),
    "--flip-fraction": Meaning("share of synthetic series stored flipped"),
    "--oblique-fraction": Meaning("share of synthetic series with an oblique direction"),
    "--fn-loss-weight": Meaning("U-Net false-negative loss weight"),
    "--follow-up": Meaning("also write later scans"),
    "--force": Meaning("overwrite the output file"),
    "--overwrite": Meaning("replace an earlier synthetic data set"),
    "--format": Meaning("export format"),
    "--interval-days": Meaning("days between two scans"),
    "--kind": Meaning("checkpoint kind"),
    "--log-file": Meaning("append a line per series and the warnings to a file"),
    "--lr": Meaning("learning rate"),
    "--lung-margin": Meaning("lung mask dilation, mm"),
    "--lung-mask": Meaning("run the U-Net only around the lungs"),
    "--malignancy": Meaning("train the malignancy classifier"),
    "--max-distance": Meaning("largest distance of a nodule pair, mm"),
    "--max-per-scan": Meaning("findings scored per scan"),
    "--max-per-series": Meaning("hard negatives mined per series"),
    "--with-positives": Meaning("mining also writes the candidates that hit a nodule"),
    "--own-candidates": Meaning("the pipeline's own labelled candidates for training"),
    "--own-share": Meaning("share of training items from the pipeline's own candidates"),
    "--own-positive-share": Meaning("share of positives among the own-candidate draws"),
    "--merge-fraction": Meaning("merge candidates this close (fraction of diameter)"),
    "--momentum": Meaning("SGD momentum"),
    "--no-augment": Meaning("no augmentation"),
    "--optimizer": Meaning("optimizer"),
    "--out": Meaning("where the command writes its results"),
    "--plot": Meaning("FROC plot file"),
    "--precision": Meaning("numeric precision of the networks"),
    "--report": Meaning("folder for an HTML report"),
    "--resume": Meaning("continue a training run"),
    "--run-name": Meaning("training run label"),
    "--scale": Meaning("demo scale"),
    "--seed": Meaning("random seed"),
    "--series": Meaning("which series (UIDs)"),
    "--series-file": Meaning("a file listing series UIDs"),
    "--shard": Meaning("K/N: this array task's share of the series"),
    "--size": Meaning("synthetic series size"),
    "--size-limit-gb": Meaning("cache size cap, GB"),
    "--split": Meaning("which series: all, train or val"),
    "--style": Meaning("synthetic phantom family"),
    "--val-every": Meaning("validate every N epochs"),
    "--val-stride": Meaning("every N-th series is validation"),
    "--weight-decay": Meaning("L2 penalty"),
    "--yes": Meaning("do not ask"),
    "--output": Meaning("where the command writes its results"),
}

# Names that still break the rule, each with why it is left for now; the test fails once one is
# fixed, so that its entry goes too.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("synth", "--series"): "counts the series to write (-n); a rename (e.g. --count) is beyond #27's decided renames",
}

# Two names for one meaning, left for now (the test fails once one goes, so that its entry goes too).
KNOWN_SYNONYMS: dict[str, str] = {
    "--output": "--out",  # ct models' -o; renaming it to --out is beyond #27's decided renames
}


def _commands(command, path=()):
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))
    yield " ".join(path) or "ct", command


def _options(command):
    """(primary long name, help) of each visible option; the help option is click's own."""
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            names = [name for name in param.opts if name.startswith("--")]
            yield names[0], param.help or ""


COMMANDS = dict(_commands(typer.main.get_command(app)))


def _help_of(shared) -> str:
    return shared.__metadata__[0].help


def _problems(command_name: str) -> list[str]:
    problems = []
    for name, help_text in _options(COMMANDS[command_name]):
        meaning = MEANINGS.get(name)
        if (command_name, name) in KNOWN_EXCEPTIONS:
            continue
        if meaning is None:
            problems.append(
                f"ct {command_name} {name} is not declared: add {name!r}: Meaning('what it means') to MEANINGS in "
                "tests/cli/test_option_vocabulary.py, or use the name MEANINGS already has for that meaning"
            )
        elif meaning.says and meaning.says.lower() not in help_text.lower():
            problems.append(
                f"ct {command_name} {name} means {meaning.text!r}, but its help does not say "
                f"{meaning.says!r}: {help_text!r}"
            )
        elif meaning.shared is not None and help_text != _help_of(meaning.shared):
            problems.append(f"ct {command_name} {name} is defined again with other help: use cli.options' definition")
    return problems


@pytest.mark.parametrize("command_name", list(COMMANDS))
def test_each_option_name_has_its_one_declared_meaning(command_name):
    assert _problems(command_name) == []


def test_one_meaning_has_one_name():
    names_by_meaning: dict[str, list[str]] = {}
    for name, meaning in MEANINGS.items():
        names_by_meaning.setdefault(meaning.text, []).append(name)
    known = [sorted(pair) for pair in KNOWN_SYNONYMS.items()]
    assert [sorted(names) for names in names_by_meaning.values() if len(names) > 1] == known


def test_known_exceptions_still_exist():
    used = {(command, name) for command, cmd in COMMANDS.items() for name, _ in _options(cmd)}
    assert set(KNOWN_EXCEPTIONS) <= used, "an exception is fixed: remove it from KNOWN_EXCEPTIONS"
    assert set(KNOWN_SYNONYMS) <= {name for _, name in used}, "a synonym is gone: remove it from KNOWN_SYNONYMS"


def test_the_vocabulary_catches_a_second_meaning(monkeypatch):
    """The check itself: diagnose's old --workers (threads, not processes) would fail it."""
    monkeypatch.setitem(MEANINGS, "--concurrent-batches", Meaning("x", says="process"))
    assert any("--concurrent-batches means" in problem for problem in _problems("diagnose"))
