"""Findings as files: a JSON Lines record per series, per-series result files, the LUNA16 CSV.

* ``--json``: one JSON object per series on one line (:func:`json_line`).
* A batch's ``--out DIR``: ``DIR/<series>.json`` per series, written atomically, so a killed
  batch leaves whole files only and a rerun skips what is done (:func:`write_result_file`).
* ``--csv``: the LUNA16 submission format ``seriesuid,coordX,coordY,coordZ,probability``, one row
  per candidate, that ``ct evaluate`` reads (:func:`write_luna16_csv`); beside it
  ``<csv>.provenance`` (JSON) says what made those rows (the format itself has no room for it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.diagnosis.provenance import differences, settings_key
from ct_pipeline.diagnosis.result import DiagnosisResult
from ct_pipeline.errors import BadDataError, BadInputError

LUNA16_HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
RESULT_SUFFIX = ".json"
# JSON, but not named *.json: an --out folder's *.json files are its per-series results
PROVENANCE_SUFFIX = ".provenance"
_SAFE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def json_line(result: DiagnosisResult) -> str:
    """The ``--json`` record of ``result``: one line, no trailing newline."""
    return json.dumps(result.to_dict(), separators=(",", ":"), allow_nan=False)


def result_file_name(series_key: str) -> str:
    """File name of a series' result: the key itself when it is file-name safe (UIDs are), else a hash."""
    if _SAFE_STEM.match(series_key) and not series_key.endswith("."):
        return series_key + RESULT_SUFFIX
    digest = hashlib.sha256(series_key.encode("utf-8")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", series_key)[-40:].strip("._") or "series"
    return f"{readable}-{digest}{RESULT_SUFFIX}"


def write_result_file(out_dir: Path, series_key: str, result: DiagnosisResult) -> Path:
    """Write ``out_dir/<key>.json`` atomically; returns its path."""
    path = Path(out_dir) / result_file_name(series_key)
    record = result.to_dict() | {"series_key": series_key}
    atomic_write_text(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path


def read_result_file(path: Path) -> DiagnosisResult:
    """Read a per-series result file.

    Raises:
        BadDataError: unreadable or not a diagnosis result.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadDataError(
            f"{path}: not a readable result file ({err}); delete it to diagnose the series again"
        ) from err
    return DiagnosisResult.from_dict(data, where=str(path))


def result_files(out_dir: Path) -> list[Path]:
    """The per-series result files in ``out_dir``, sorted by name (temporary files left out)."""
    if not Path(out_dir).is_dir():
        raise BadInputError(f"{out_dir} is not a folder; give the --out folder of a ct diagnose batch")
    return sorted(p for p in Path(out_dir).glob(f"*{RESULT_SUFFIX}") if not p.name.startswith("."))


def luna16_rows(results: Iterable[DiagnosisResult]) -> list[tuple[str, float, float, float, float]]:
    """One (seriesuid, x, y, z, probability) row per candidate, series in the given order."""
    return [
        (result.series_uid, *(float(v) for v in finding.center_xyz), float(finding.score))  # type: ignore[misc]
        for result in results
        for finding in result.findings
    ]


def luna16_csv_text(results: Iterable[DiagnosisResult]) -> str:
    """The LUNA16 submission CSV (header included) of ``results``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LUNA16_HEADER)
    for uid, x, y, z, probability in luna16_rows(results):
        writer.writerow([uid, f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", f"{probability:.6g}"])
    return buffer.getvalue()


def write_luna16_csv(path: os.PathLike | str, results: Iterable[DiagnosisResult]) -> int:
    """Write the LUNA16 CSV atomically, and its provenance side file; returns the number of rows (candidates)."""
    results = list(results)
    atomic_write_text(path, luna16_csv_text(results))
    atomic_write_text(provenance_path(path), json.dumps(csv_provenance(results), indent=1) + "\n")
    return sum(len(r.findings) for r in results)


def provenance_path(csv_path: os.PathLike | str) -> Path:
    return Path(f"{os.fspath(csv_path)}{PROVENANCE_SUFFIX}")


def csv_provenance(results: list[DiagnosisResult]) -> dict:
    """The CSV's side file: each distinct way its rows were made (models, settings), with its series."""
    ways: dict[str, dict] = {}
    for result in results:
        key = settings_key(result.provenance) if result.provenance else "unrecorded"
        way = ways.setdefault(
            key,
            {"settings_key": key, "series": []}
            | {k: v for k, v in result.provenance.items() if k != "source_fingerprint"},
        )
        way["series"].append(result.series_uid)
    return {"format": "ct-findings-provenance", "made_with": list(ways.values())}


def check_same_settings(results: list[DiagnosisResult], where: Path) -> None:
    """Refuse results made in different ways (models or settings) in one table.

    Raises:
        BadInputError: naming how many ways, and what differs between the first two.
    """
    by_key: dict[str, DiagnosisResult] = {}
    for result in results:
        by_key.setdefault(settings_key(result.provenance) if result.provenance else "unrecorded", result)
    if len(by_key) > 1:
        first, second = list(by_key.values())[:2]
        changed = differences(first.provenance, second.provenance, source=False)
        raise BadInputError(
            f"ct merge: {where} holds results made in {len(by_key)} different ways ({first.series_uid} and "
            f"{second.series_uid} differ in {', '.join(changed) or 'how they were recorded'}); re-run ct diagnose with "
            "one set of models and options, or pass --allow-mixed to merge them anyway"
        )


def merge_result_files(out_dir: Path, csv_path: Path | None = None, allow_mixed: bool = False) -> tuple[Path, int, int]:
    """Gather every result in ``out_dir`` into one LUNA16 CSV (default ``out_dir/findings.csv``).

    Args:
        allow_mixed: merge results made with different models or settings (refused otherwise).

    Returns:
        (CSV path, number of series, number of rows).

    Raises:
        BadInputError: no result files, or results made in different ways; BadDataError: a
            result file is damaged.
    """
    files = result_files(out_dir)
    if not files:
        raise BadInputError(
            f"{out_dir} holds no ct diagnose result files (*.json); run ct diagnose --out {out_dir} first"
        )
    results = [read_result_file(p) for p in files]
    results.sort(key=lambda r: r.series_uid)
    if not allow_mixed:
        check_same_settings(results, Path(out_dir))
    target = Path(csv_path) if csv_path is not None else Path(out_dir) / "findings.csv"
    rows = write_luna16_csv(target, results)
    return target, len(results), rows
