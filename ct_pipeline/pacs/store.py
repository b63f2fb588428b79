"""Findings sent back to the PACS: STOW-RS of the SEG and SR, each stored once.

The DICOM objects get new UIDs every time they are written, so "already stored" cannot be read
from the files. It is kept instead in a record beside them (``<dicom_out>/.stored.json``): per
server and file name, the *content key* of what was stored (the models' hashes, the settings and
the source's fingerprint: what makes the findings what they are) and the instance UID the server
accepted. A file whose content key the record holds for that server is not sent again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.pacs.server import DicomwebServer, PacsError, open_client, talking_to

RECORD = ".stored.json"  # hidden: the DICOM walk of --dicom-out skips it
_FAILED_SOPS = "FailedSOPSequence"


@dataclass(frozen=True)
class StoreOutcome:
    """One file and what became of it: "stored" now, or "already stored" by an earlier run.

    Attributes:
        path: the local file (it stays whatever the server says).
        sop_instance_uid: the instance the server holds (for "already stored": the one stored then).
        server: the server's URL.
    """

    path: Path
    status: str
    sop_instance_uid: str
    server: str


def store_files(server: DicomwebServer, paths: Sequence[Path], content_key: str, client=None) -> list[StoreOutcome]:
    """Send each of ``paths`` to ``server`` (STOW-RS) unless the record beside it says it was sent
    with this ``content_key``; the record is updated after each accepted file.

    Raises:
        PacsError: the server refused a file or could not be reached (the files sent before it
            are recorded; the local files are never touched).
    """
    import pydicom

    outcomes = []
    for path in paths:
        path = Path(path)
        record_path = path.parent / RECORD
        record = _read_record(record_path)
        earlier = record.get(server.url, {}).get(path.name)
        if earlier and earlier.get("content_key") == content_key:
            outcomes.append(StoreOutcome(path, "already stored", str(earlier.get("sop_instance_uid", "")), server.url))
            continue
        dataset = pydicom.dcmread(path)
        client = client or open_client(server)
        with talking_to(server, f"storing {path.name}"):
            answer = client.store_instances([dataset])
        failed = answer.get(_FAILED_SOPS) if answer is not None else None
        if failed:
            reason = getattr(failed[0], "FailureReason", "")
            raise PacsError(
                f"DICOMweb server {server.url} refused {path} (failure reason {reason or 'unknown'}); "
                "the file stays where it is"
            )
        uid = str(dataset.SOPInstanceUID)
        _check_held(client, server, path, dataset, uid)
        record.setdefault(server.url, {})[path.name] = {"content_key": content_key, "sop_instance_uid": uid}
        atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True))
        outcomes.append(StoreOutcome(path, "stored", uid, server.url))
    return outcomes


def _check_held(client, server: DicomwebServer, path: Path, dataset, uid: str) -> None:
    """Ask the server (QIDO-RS) for what it just accepted: a success answer is not proof, e.g.
    Orthanc's DICOMweb plugin answers success for an instance that its filter then drops."""
    with talking_to(server, f"checking that {path.name} was stored"):
        held = client.search_for_instances(
            study_instance_uid=str(dataset.StudyInstanceUID), search_filters={"SOPInstanceUID": uid}
        )
    if not held:
        raise PacsError(
            f"DICOMweb server {server.url} refused {path} (it answered success but does not hold instance {uid}: "
            "its storage policy dropped it); the file stays where it is"
        )


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: taken as empty, so its files are sent again (as new instances)
    return record if isinstance(record, dict) else {}
