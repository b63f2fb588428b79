"""What made a diagnosis result: the ct version, the models, every option that changes findings,
and the content fingerprint of the source's files; and whether two results were made the same way.

Every result carries this record (per-series JSON, ``--json``, report pages, and a side file
beside ``--csv``), so a result can always be traced to its models. A batch re-run into the same
``--out`` skips a series only when its recorded models, settings and source all match the
current ones (:func:`differences`), and ``ct merge`` refuses to mix results made differently.
The source counts by the bytes of every file the loader reads
(:mod:`ct_pipeline.loading.fingerprint`), so a file changed in place is never taken for the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ct_pipeline import __version__
from ct_pipeline.diagnosis.config import DiagnosisConfig
from ct_pipeline.loading.fingerprint import content_fingerprint, is_content_fingerprint, sha256_of_file

# DiagnosisConfig fields that only change speed or memory, not the findings.
_SPEED_ONLY = frozenset({"seg_batch_size", "cls_batch_size"})
# Settings recorded since a later ct, with the value that does what ct did before them: a record
# without one was made that way, so it stays a repeat of a run with that value (and no other).
_ADDED_LATER = {"classifier_flips": 1, "smallest_nodule_mm": 0.0}


def run_provenance(
    model_paths: Mapping[str, str], precision: Mapping[str, str], config: DiagnosisConfig, device_type: str
) -> dict[str, Any]:
    """The record of one batch's way of diagnosing (the same for every series of the batch).

    Args:
        model_paths: checkpoint path per kind ("seg", "cls", optionally "mal").
        precision: the precision each network runs in.
        config: the diagnosis parameters.
        device_type: "cpu" or "cuda".
    """
    settings = {k: v for k, v in asdict(config).items() if k not in _SPEED_ONLY}
    settings["hu_range"] = list(settings["hu_range"])
    return {
        "ct_version": __version__,
        "models": {
            kind: {"kind": kind, "sha256": sha256_of_file(path), "file": os.fspath(path)}
            for kind, path in sorted(model_paths.items())
        },
        "settings": {**settings, "precision": dict(sorted(precision.items())), "device_type": device_type},
    }


def with_source(provenance: Mapping[str, Any], source_files: Sequence[str]) -> dict[str, Any]:
    """``provenance`` plus the content fingerprint of ``source_files`` (a volume's ``source_files``,
    or :func:`ct_pipeline.loading.entry_files` of the series before it is read)."""
    return {**provenance, "source_fingerprint": content_fingerprint(source_files)}


def comparable(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for two results to be repeats: model hashes, settings, source (not paths or version)."""
    models = provenance.get("models") or {}
    settings = provenance.get("settings")
    return {
        "models": {kind: (entry or {}).get("sha256") for kind, entry in sorted(models.items())},
        "settings": {**_ADDED_LATER, **settings} if isinstance(settings, Mapping) else settings,
        "source_fingerprint": provenance.get("source_fingerprint"),
    }


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], source: bool = True) -> list[str]:
    """Names of what differs, e.g. ``["the cls model", "nodule_threshold"]`` (empty: a true repeat).

    ``source`` False compares only models and settings (results of different series). A result
    without a record (written by an older ct) differs in everything.
    """
    if not recorded:
        return ["no record of how it was made"]
    old, new = comparable(recorded), comparable(current)
    names = []
    for kind in sorted(set(old["models"]) | set(new["models"])):
        if old["models"].get(kind) != new["models"].get(kind):
            names.append(f"the {kind} model")
    old_settings, new_settings = old["settings"] or {}, new["settings"] or {}
    names += [
        key for key in sorted(set(old_settings) | set(new_settings)) if old_settings.get(key) != new_settings.get(key)
    ]
    # An older ct's fingerprint (names, sizes, mtimes), or none, cannot vouch for the bytes.
    fingerprints = (old["source_fingerprint"], new["source_fingerprint"])
    if source and (fingerprints[0] != fingerprints[1] or not is_content_fingerprint(fingerprints[0])):
        names.append("the source files")
    return names


def settings_key(provenance: Mapping[str, Any]) -> str:
    """A short hash of the models and settings (not the source): equal for results of one way of diagnosing."""
    record = comparable(provenance)
    del record["source_fingerprint"]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
