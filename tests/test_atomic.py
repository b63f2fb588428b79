import os
import stat

import pytest

from ct_pipeline.atomic import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_respects_umask(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    old_mask = os.umask(0o022)
    try:
        atomic_write_text(target, "new")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_midway_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
