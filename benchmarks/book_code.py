"""Run the book's own p2ch14 `nodule_analysis.py` on one CT, as the diagnose benchmark's baseline.

The book's repository (deep-learning-with-pytorch/dlwpt-code) has no licence, so none of its code
is in ours: ``BOOK_CODE_DIR`` names a checkout, and ``prepare_book_run`` copies the packages it
runs into a temporary folder and makes the five edits today's libraries need there:

1. ``util/disk.py``: diskcache 5 dropped ``BytesType`` and ``BytesIO`` from ``diskcache.core``;
2. ``np.bool`` -> ``bool`` and 3. ``np.int`` -> ``int`` (both removed in numpy 1.24);
4-5. ``map_location='cpu'`` on the two ``torch.load`` calls of ``nodule_analysis.py`` (the
   checkpoints were saved on a GPU), with ``weights_only=False`` that torch >= 2.6 asks for them.

It lays the CT out the way the book expects: ``data-unversioned/part2/luna/subset0/<uid>.mhd``,
both annotation tables under ``data/part2/luna/``, and a ``candidates.csv`` with one row for the
series (the book lists series from its candidate table; one series makes it the validation split).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("p2ch13", "p2ch14", "util")
# (file, old, new): each must match at least once, so a changed checkout fails loudly.
EDITS = (
    (
        "util/disk.py",
        "from diskcache.core import BytesType, MODE_BINARY, BytesIO",
        "from diskcache.core import MODE_BINARY\nfrom io import BytesIO\nBytesType = bytes",
    ),
    ("*", "np.bool)", "bool)"),
    ("*", "dtype=np.int)", "dtype=int)"),
    (
        "p2ch14/nodule_analysis.py",
        "torch.load(self.cli_args.segmentation_path)",
        "torch.load(self.cli_args.segmentation_path, map_location='cpu', weights_only=False)",
    ),
    (
        "p2ch14/nodule_analysis.py",
        "torch.load(self.cli_args.classification_path)",
        "torch.load(self.cli_args.classification_path, map_location='cpu', weights_only=False)",
    ),
)
# "nodule prob 0.998, center xyz XyzTuple(x=np.float64(-95.1), y=..., z=...)" (numpy 2 reprs)
_FINDING = re.compile(
    r"nodule prob (?P<prob>[0-9.]+), .*?x=(?:np\.float64\()?(?P<x>[-0-9.e]+)\)?, "
    r"y=(?:np\.float64\()?(?P<y>[-0-9.e]+)\)?, z=(?:np\.float64\()?(?P<z>[-0-9.e]+)"
)


@dataclass(frozen=True)
class BookRun:
    """A prepared copy of the book's code: run ``argv`` with ``cwd``."""

    cwd: Path
    argv: list[str]


def book_code_dir() -> Path | None:
    """The checkout named by ``BOOK_CODE_DIR``, or None when it is unset or lacks p2ch14."""
    value = os.environ.get("BOOK_CODE_DIR")
    if not value:
        return None
    path = Path(value)
    if not (path / "p2ch14" / "nodule_analysis.py").is_file():
        raise SystemExit(f"BOOK_CODE_DIR={value} has no p2ch14/nodule_analysis.py")
    return path


def _apply_edits(root: Path) -> None:
    for name, old, new in EDITS:
        files = sorted(root.rglob("*.py")) if name == "*" else [root / name]
        hits = 0
        for path in files:
            text = path.read_text(encoding="utf-8")
            if old in text:
                hits += text.count(old)
                path.write_text(text.replace(old, new), encoding="utf-8")
        if not hits:
            raise SystemExit(f"the book's code changed: {old!r} not found in {name}")


def prepare_book_run(
    book_dir: Path, work: Path, volume, luna16_tables: Path, seg_state: Path, cls_state: Path, python: str
) -> BookRun:
    """Copy the book's code into ``work``, edit it, write ``volume`` as its one CT; return how to run it."""
    import SimpleITK as sitk

    from ct_pipeline.geometry import image_on_grid

    for package in PACKAGES:
        shutil.copytree(book_dir / package, work / package)
    _apply_edits(work)
    tables = work / "data" / "part2" / "luna"
    tables.mkdir(parents=True)
    for name in ("annotations.csv", "annotations_with_malignancy.csv"):
        shutil.copy(luna16_tables / name, tables / name)
    uid = volume.series_uid
    centre_xyz = [o + s * n / 2 for o, s, n in zip(volume.origin_xyz, volume.spacing_xyz, volume.shape_irc[::-1])]
    (tables / "candidates.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,class\n" + f"{uid},{centre_xyz[0]},{centre_xyz[1]},{centre_xyz[2]},0\n"
    )
    ct_dir = work / "data-unversioned" / "part2" / "luna" / "subset0"
    ct_dir.mkdir(parents=True)
    sitk.WriteImage(image_on_grid(volume.hu, volume.geometry), str(ct_dir / f"{uid}.mhd"))
    argv = [
        python,
        "-m",
        "p2ch14.nodule_analysis",
        "--segmentation-path",
        str(seg_state),
        "--classification-path",
        str(cls_state),
        uid,
    ]
    return BookRun(cwd=work, argv=argv)


def parse_findings(stdout: str) -> list[dict]:
    """The findings the book prints (nodule probability > 0.5): ``[{"nodule_prob", "center_xyz"}]``."""
    findings = []
    for match in _FINDING.finditer(stdout):
        center = [float(match[axis]) for axis in "xyz"]
        findings.append({"nodule_prob": float(match["prob"]), "center_xyz": center})
    return findings
