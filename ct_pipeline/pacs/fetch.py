"""Series on a DICOMweb server: found with QIDO-RS, downloaded once with WADO-RS into the cache.

A fetched series lives in ``CACHE/dicomweb/<server key>/<series_uid>/`` as one ``.dcm`` per
instance and a hidden ``.manifest.json`` naming the instances. It is downloaded into a temporary folder
beside it and renamed into place only when complete, so a transfer that breaks half-way leaves
nothing behind; it is downloaded again only when the server's list of instances differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.errors import BadDataError, BadInputError, NotFoundError
from ct_pipeline.pacs.server import DicomwebServer, open_client, talking_to

MANIFEST = ".manifest.json"  # hidden: the DICOM walk skips it
MANIFEST_VERSION = 1

# QIDO-RS attribute tags (PS3.18 JSON keys are the tags in hex).
_SOP_UID, _STUDY_UID, _SERIES_UID, _MODALITY = "00080018", "0020000D", "0020000E", "00080060"
_STUDY_DATE, _N_INSTANCES = "00080020", "00201209"


@dataclass(frozen=True)
class RemoteSeries:
    """One series as the server describes it (QIDO-RS), before any download.

    Attributes:
        series_uid / study_uid: its UIDs.
        modality: e.g. "CT" ("" when the server does not say).
        instance_uids: SOPInstanceUIDs, sorted (empty for a series-level listing).
        n_instances: how many instances the server holds.
        study_date: YYYYMMDD, "" when unknown.
    """

    series_uid: str
    study_uid: str
    modality: str
    instance_uids: tuple[str, ...] = ()
    n_instances: int = 0
    study_date: str = ""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the sorted instance UIDs: a changed series (slice added, removed, replaced) changes it."""
        return hashlib.sha256("\n".join(self.instance_uids).encode()).hexdigest()


def _value(dataset: dict, tag: str) -> str:
    values = dataset.get(tag, {}).get("Value") or [""]
    return str(values[0])


def look_up_series(server: DicomwebServer, series_uid: str, client=None) -> RemoteSeries:
    """What the server holds of ``series_uid`` (QIDO-RS at instance level).

    Raises:
        NotFoundError: the server has no instance of it.
        BadDataError: its instances span several studies or series (the UID is not unique there),
            or it is not a CT.
        PacsError: unreachable, refused, or an HTTP error.
    """
    client = client or open_client(server)
    with talking_to(server, f"looking up series {series_uid}"):
        found = client.search_for_instances(
            search_filters={"SeriesInstanceUID": series_uid},
            fields=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality"],
            get_remaining=True,
        )
    if not found:
        raise NotFoundError(f"series {series_uid} is neither under the data roots nor on DICOMweb server {server.url}")
    series = sorted({_value(d, _SERIES_UID) for d in found})
    studies = sorted({_value(d, _STUDY_UID) for d in found})
    if series != [series_uid] or len(studies) != 1:
        raise BadDataError(
            f"DICOMweb server {server.url} returned instances of {len(series)} series in {len(studies)} studies for "
            f"series {series_uid} ({', '.join(studies)}); the UID is not unique there, so which scan is meant is unclear"
        )
    modalities = sorted({_value(d, _MODALITY) for d in found} - {""})
    if modalities and modalities != ["CT"]:
        raise BadDataError(f"series {series_uid} on {server.url} is {'/'.join(modalities)}, not CT; give a CT series")
    uids = tuple(sorted(_value(d, _SOP_UID) for d in found))
    return RemoteSeries(series_uid, studies[0], "CT", uids, len(uids))


def series_folder(server: DicomwebServer, series_uid: str, cache_dir: Path) -> Path:
    """Where ``series_uid`` fetched from ``server`` lives (the UID is validated by the caller)."""
    return Path(cache_dir) / "dicomweb" / server.key / series_uid


def fetch_series(server: DicomwebServer, series_uid: str, cache_dir: Path) -> Path:
    """The folder holding ``series_uid`` from ``server``: the cached copy when the server's
    instances are the same, else a fresh download (WADO-RS), renamed into place when complete.

    Raises:
        NotFoundError / BadDataError / PacsError: see :func:`look_up_series`; a transfer that
            breaks leaves the previous copy (if any) as it was.
    """
    client = open_client(server)
    remote = look_up_series(server, series_uid, client)
    folder = series_folder(server, series_uid, cache_dir)
    if _manifest_fingerprint(folder) == remote.fingerprint:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{series_uid}.", suffix=".partial", dir=folder.parent))
    try:
        _download(client, server, remote, staging)
        _write_manifest(staging, server, remote)
        try:
            _replace(staging, folder)
        except OSError:
            # Another process (a shard on the same node) renamed the same series in first: use its copy.
            if _manifest_fingerprint(folder) != remote.fingerprint:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; after a failure, the half
    return folder


def _download(client, server: DicomwebServer, remote: RemoteSeries, staging: Path) -> None:
    expected = set(remote.instance_uids)
    got: set[str] = set()
    with talking_to(server, f"downloading series {remote.series_uid}"):
        for dataset in client.iter_series(remote.study_uid, remote.series_uid):
            uid = str(dataset.get("SOPInstanceUID", ""))
            if dataset.get("SeriesInstanceUID") != remote.series_uid or uid not in expected:
                raise BadDataError(
                    f"DICOMweb server {server.url} sent instance {uid or '(no UID)'} that is not one of series "
                    f"{remote.series_uid}'s {len(expected)}; not using it"
                )
            save_instance(dataset, staging / f"{hashlib.sha256(uid.encode()).hexdigest()[:24]}.dcm")
            got.add(uid)
    if got != expected:
        raise BadDataError(
            f"DICOMweb server {server.url} sent {len(got)} of series {remote.series_uid}'s {len(expected)} instances; "
            "run again (nothing was kept)"
        )


def save_instance(dataset, path: Path) -> None:
    """One downloaded instance as a DICOM file (a separate step so that tests can break a transfer)."""
    dataset.save_as(path, enforce_file_format=True)


def _write_manifest(staging: Path, server: DicomwebServer, remote: RemoteSeries) -> None:
    manifest = {
        "version": MANIFEST_VERSION,
        "server": server.url,
        "series_uid": remote.series_uid,
        "study_uid": remote.study_uid,
        "fingerprint": remote.fingerprint,
        "instance_uids": list(remote.instance_uids),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _manifest_fingerprint(folder: Path) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION
    return manifest.get("fingerprint") if ok else None


def _replace(staging: Path, folder: Path) -> None:
    """Rename the complete ``staging`` to ``folder``, moving an outdated copy aside first."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, folder)


_DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


@dataclass(frozen=True)
class SeriesQuery:
    """Which series of a server a batch walks (QIDO-RS at series level).

    Attributes:
        modality: DICOM Modality to match ("CT").
        study_date: a DICOM date or range, YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD
            (inclusive); None: any date.
    """

    modality: str = "CT"
    study_date: str | None = None

    def __post_init__(self) -> None:
        match = _DATE_RANGE.match(self.study_date or "")
        if self.study_date is not None and (not match or not (match.group(1) or match.group(3))):
            raise BadInputError(
                f"--study-date {self.study_date!r} is not a date range; give FROM-TO as YYYYMMDD-YYYYMMDD "
                "(either end may be left out, e.g. 20240101-)"
            )
        if not re.fullmatch(r"[A-Z]{2,16}", self.modality):
            raise BadInputError(f"--modality {self.modality!r} is not a DICOM modality (e.g. CT)")

    @property
    def filters(self) -> dict[str, str]:
        found = {"Modality": self.modality}
        if self.study_date is not None:
            found["StudyDate"] = self.study_date
        return found


def list_series(server: DicomwebServer, query: SeriesQuery = SeriesQuery()) -> list[RemoteSeries]:
    """Every series on the server that ``query`` matches (QIDO-RS at series level), sorted by UID."""
    filters = query.filters
    client = open_client(server)
    with talking_to(server, "listing series"):
        found = client.search_for_series(
            search_filters=filters, fields=["StudyDate", "NumberOfSeriesRelatedInstances"], get_remaining=True
        )
    series = [
        RemoteSeries(
            _value(d, _SERIES_UID),
            _value(d, _STUDY_UID),
            _value(d, _MODALITY),
            n_instances=int(_value(d, _N_INSTANCES) or 0),
            study_date=_value(d, _STUDY_DATE),
        )
        for d in found
    ]
    return sorted(series, key=lambda s: s.series_uid)


__all__: Sequence[str] = [
    "RemoteSeries",
    "SeriesQuery",
    "look_up_series",
    "fetch_series",
    "list_series",
    "series_folder",
]
