"""The diagnose benchmark's baseline: the book's own code, edited for today's libraries and read back."""

from __future__ import annotations

import pytest

from benchmarks.book_code import EDITS, _apply_edits, parse_findings

BOOK_STDOUT = """found nodule candidates in 1.2.3:
nodule prob 0.999, center xyz XyzTuple(x=np.float64(-114.4306640625), y=np.float64(-125.2197265625), z=np.float64(-156.0))
nodule prob 0.705, center xyz XyzTuple(x=-92.5, y=-226.8, z=-234.0)
1.2.3
                 |    Complete Miss |     Filtered Out |     Pred. Nodule
"""


def test_the_books_printed_findings_are_read_with_numpy_2_and_plain_reprs():
    assert parse_findings(BOOK_STDOUT) == [
        {"nodule_prob": 0.999, "center_xyz": [-114.4306640625, -125.2197265625, -156.0]},
        {"nodule_prob": 0.705, "center_xyz": [-92.5, -226.8, -234.0]},
    ]


def _fake_checkout(root):
    (root / "util").mkdir(parents=True)
    (root / "p2ch14").mkdir()
    (root / "util" / "disk.py").write_text("from diskcache.core import BytesType, MODE_BINARY, BytesIO\n")
    (root / "p2ch14" / "nodule_analysis.py").write_text(
        "a = np.zeros(3, dtype=np.bool)\nb = np.zeros(3, dtype=np.int)\n"
        "s = torch.load(self.cli_args.segmentation_path)\nc = torch.load(self.cli_args.classification_path)\n"
    )


def test_every_edit_applies_to_the_books_lines(tmp_path):
    _fake_checkout(tmp_path)
    _apply_edits(tmp_path)
    analysis = (tmp_path / "p2ch14" / "nodule_analysis.py").read_text()
    assert "np.bool" not in analysis and "np.int)" not in analysis
    assert analysis.count("map_location='cpu', weights_only=False") == 2
    disk = (tmp_path / "util" / "disk.py").read_text()
    assert "BytesType = bytes" in disk and "from io import BytesIO" in disk
    assert len(EDITS) == 5


def test_a_checkout_that_changed_is_refused_by_name(tmp_path):
    _fake_checkout(tmp_path)
    (tmp_path / "util" / "disk.py").write_text("from diskcache.core import MODE_BINARY\n")
    with pytest.raises(SystemExit, match="util/disk.py"):
        _apply_edits(tmp_path)
