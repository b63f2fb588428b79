"""No output replaces an input: the one check every writing command runs before any work.

A command lists the places it writes and the places it reads, each under the option that named
it, as :class:`Place` values, and calls :func:`refuse_overlaps`. A place is a file, or a folder
with the names (shell patterns, relative to it) of the files in it that are written or read:
``ct diagnose --out DIR`` writes ``*.json``, ``findings*.csv`` and ``logs/...`` there, a data root
is read for its LUNA16 tables and series files. So an output folder may hold inputs it never
writes over (a checkpoint beside the results), but never one it would replace.

Paths are compared resolved (symlinks and ``..`` followed), and existing files also by
``os.path.samefile`` (hard links).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.errors import BadInputError

ANYTHING = ("*",)
# What a data root is read for: the LUNA16 tables at its top (the evaluation's too) and series
# files at any depth. DICOM files without a suffix are not listed: no output of ours is named so.
DATA_ROOT_READS = (
    "candidates.csv",
    "annotations.csv",
    "annotations_with_malignancy.csv",
    "annotations_excluded.csv",
    "seriesuids.csv",
    "*.mhd",
    "*.raw",
    "*.zraw",
    "*.mha",
    "*.nrrd",
    "*.nhdr",
    "*.nii",
    "*.nii.gz",
    "*.dcm",
)


@dataclass(frozen=True)
class Place:
    """A file, or the files in a folder matching ``patterns``, that one option names.

    Attributes:
        option: the option (or argument) that named it, e.g. ``--csv``; shown in the message.
        path: the file or folder as given.
        patterns: empty for a file; for a folder, shell patterns of its files (relative paths,
            lower case; ``*`` also crosses ``/``), e.g. ``("*.json", "logs/*")``.
    """

    option: str
    path: Path
    patterns: tuple[str, ...] = ()

    @property
    def is_folder(self) -> bool:
        return bool(self.patterns)

    @property
    def resolved(self) -> Path:
        return Path(os.path.abspath(Path(self.path).expanduser().resolve(strict=False)))

    def names(self, file: Path) -> bool:
        """Whether resolved ``file`` is this place, or one of its folder's files."""
        if not self.is_folder:
            if file == self.resolved:
                return True
            try:
                return os.path.samefile(file, self.resolved)
            except OSError:  # either is missing: then only the names could be the same
                return False
        try:
            relative = file.relative_to(self.resolved).as_posix().lower()
        except ValueError:
            return False
        return any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.patterns)

    def files(self, within: Path) -> Iterator[Path]:
        """The existing files below ``within`` (resolved) that this folder names."""
        if not within.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(within):
            dirnames.sort()  # the same file named first on every run
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if self.names(file):
                    yield file


def data_root_places(roots: Iterable[Path]) -> tuple[Place, ...]:
    """Each ``--data-root`` as the files it is read for (:data:`DATA_ROOT_READS`)."""
    return tuple(Place("--data-root", Path(root), DATA_ROOT_READS) for root in roots)


def refuse_overlaps(outputs: Iterable[Place | None], inputs: Iterable[Place | None]) -> None:
    """Refuse before any work when an output would replace a file the command reads.

    ``None`` entries (options not given) are skipped.

    Raises:
        BadInputError: naming the output's option and path, the file and the input's option.
    """
    read = [place for place in inputs if place is not None]
    for output in (place for place in outputs if place is not None):
        for source in read:
            clash = _clash(output, source)
            if clash is not None:
                raise BadInputError(_message(output, source, clash))


def _clash(output: Place, source: Place) -> Path | None:
    """A file ``output`` would write that ``source`` names, or None."""
    if not output.is_folder:
        return output.resolved if source.names(output.resolved) else None
    if not source.is_folder:
        return source.resolved if output.names(source.resolved) else None
    # Two folders: only files below both can clash; walk the deeper one (usually neither).
    out_dir, in_dir = output.resolved, source.resolved
    deeper = out_dir if out_dir.is_relative_to(in_dir) else in_dir if in_dir.is_relative_to(out_dir) else None
    if deeper is None:
        return None
    return next((file for file in source.files(deeper) if output.names(file)), None)


def _message(output: Place, source: Place, file: Path) -> str:
    read_as = f"{source.option} {source.path}"
    if not output.is_folder:
        return f"{output.option} {output.path} is a file this command reads ({read_as}); choose another {output.option}"
    if output.patterns == ANYTHING:  # a folder the command fills as it likes: no file of its own there is safe
        return (
            f"{output.option} {output.path} holds {file}, which this command reads ({read_as}); "
            f"give {output.option} a folder of its own"
        )
    return (
        f"{output.option} {output.path} would overwrite {file}, which this command reads ({read_as}); "
        f"choose another {output.option}"
    )
