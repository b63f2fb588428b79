"""What `ct synth` wrote into a folder, so that ``--overwrite`` deletes only that.

``ct synth DIR --overwrite`` must never delete a real series or replace a real
``annotations.csv`` that happens to sit in DIR. So every file `ct synth` writes is listed in
``DIR/.ct-synth-manifest.json`` with its size and mtime, and ``--overwrite`` deletes a file only
if it is listed there and unchanged since; any other file in DIR stops it before anything is
deleted. Files about to be written are listed as pending first (a folder prefix for a DICOM
series), so what a killed run left is still known to be ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text, check_writable
from ct_pipeline.errors import BadInputError

MANIFEST_NAME = ".ct-synth-manifest.json"
FORMAT = "ct-synth-manifest"


class SynthManifest:
    """The manifest of one output folder, rewritten (atomically) after each change.

    Attributes:
        out_dir: the folder.
        files: relative path -> [size, mtime_ns] of each finished file.
        pending: relative paths or folder prefixes (ending in "/") being written.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.files: dict[str, list[int]] = {}
        self.pending: set[str] = set()

    @classmethod
    def read(cls, out_dir: Path) -> SynthManifest | None:
        """The folder's manifest, or None when it has none (or an unreadable one)."""
        path = Path(out_dir) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        manifest = cls(out_dir)
        manifest.files = {str(k): [int(v[0]), int(v[1])] for k, v in dict(data.get("files", {})).items()}
        manifest.pending = {str(p) for p in data.get("pending", [])}
        return manifest

    def start(self, *relative: str) -> None:
        """Record files (or "folder/" prefixes) about to be written."""
        self.pending.update(relative)
        self._save()

    def finish(self, *relative: str) -> None:
        """Record finished files (each folder prefix given to :meth:`start`: every file below it)."""
        for name in relative:
            self.pending.discard(name)
            paths = (
                sorted(p for p in (self.out_dir / name).rglob("*") if p.is_file())
                if name.endswith("/")
                else [self.out_dir / name]
            )
            for path in paths:
                stat = path.stat()
                self.files[path.relative_to(self.out_dir).as_posix()] = [stat.st_size, stat.st_mtime_ns]
        self._save()

    def owns(self, relative: str) -> bool:
        """Whether ``relative`` is listed, or lies below a pending prefix."""
        return (
            relative in self.files
            or relative in self.pending
            or any(p.endswith("/") and relative.startswith(p) for p in self.pending)
        )

    def _save(self) -> None:
        text = json.dumps({"format": FORMAT, "files": self.files, "pending": sorted(self.pending)}, indent=0)
        atomic_write_text(self.out_dir / MANIFEST_NAME, text)


def prepare_out_dir(out_dir: Path, overwrite: bool) -> SynthManifest:
    """An empty output folder (``overwrite``: after deleting what an earlier ``ct synth`` wrote), with a new manifest.

    Raises:
        BadInputError: ``out_dir`` is a file, is not writable, or is not empty without ``overwrite``.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output {str(out_dir)!r} is a file; give a folder (new or empty)")
    check_writable(out_dir, "output folder", is_folder=True)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise BadInputError(
                f"output folder {str(out_dir)!r} is not empty; "
                "pick a new folder or pass --overwrite to replace a data set"
            )
        clear_previous_output(out_dir)  # refuses, deleting nothing, unless everything there is ours
    out_dir.mkdir(parents=True, exist_ok=True)
    return SynthManifest(out_dir)


def clear_previous_output(out_dir: Path) -> int:
    """Delete what an earlier `ct synth` wrote into ``out_dir``; returns the number of files deleted.

    Nothing is deleted unless every file in the folder is one `ct synth` listed and left
    unchanged (pending files of a killed run count as listed).

    Raises:
        BadInputError: the folder has no manifest, or holds a file that is not listed or changed
            since (named in the message).
    """
    manifest = SynthManifest.read(out_dir)
    present = sorted(p for p in Path(out_dir).rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    if manifest is None:
        example = f", e.g. {present[0]}" if present else ""
        raise BadInputError(
            f"--overwrite: {out_dir} was not written by ct synth (no {MANIFEST_NAME}){example}; nothing was "
            "deleted: pick a new or empty folder"
        )
    for path in present:
        relative = path.relative_to(out_dir).as_posix()
        if not manifest.owns(relative):
            raise BadInputError(
                f"--overwrite: {path} was not written by ct synth; nothing was deleted: move it away or pick another folder"
            )
        recorded = manifest.files.get(relative)
        stat = path.stat()
        if recorded is not None and recorded != [stat.st_size, stat.st_mtime_ns]:
            raise BadInputError(
                f"--overwrite: {path} changed since ct synth wrote it; nothing was deleted: move it away or pick another folder"
            )
    for path in present:
        path.unlink()
    for folder in sorted((p for p in Path(out_dir).rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            os.rmdir(folder)
    (Path(out_dir) / MANIFEST_NAME).unlink(missing_ok=True)
    return len(present)
