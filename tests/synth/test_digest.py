"""ct synth's output is pinned: a refactor, or a new random stream, must leave old data sets byte-identical.

Quality figures, cached crops and trained checkpoints refer to data sets by seed; if the same seed
drew other bytes, every recorded result would silently describe data nobody can regenerate.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from ct_pipeline.synth import SynthConfig, write_synthetic_dataset
from ct_pipeline.synth.manifest import MANIFEST_NAME
from ct_pipeline.synth.streams import DATASET_STREAMS, Stream, dataset_rng, series_rng

SYNTH_DIR = Path(__file__).resolve().parents[2] / "ct_pipeline" / "synth"


def _digest(folder: Path) -> str:
    """One SHA-256 over every file's relative path and bytes (the manifest holds mtimes: left out)."""
    total = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            total.update(path.relative_to(folder).as_posix().encode() + b"\0")
            total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


# Written with numpy 2.4 and scipy 1.17 on x86-64. If an upgrade of either changes these, the data
# sets changed for every user: say so in the release notes, then re-pin.
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # Standard style, one series oblique and one flipped: streams LAYOUT..NOISE, UID_DIGITS, DIRECTION_ORDER.
        ({"flip_fraction": 0.5}, "b80cd30b7d7015145a6a9004d5b9bbe275980d9652bb82e7b59367795f09e59a"),
        # site-b with follow-ups: adds the STYLE_* and FOLLOW_UP_* streams.
        ({"style": "site-b", "follow_up": True}, "92103f285c7445500f9f18074c2866dc2f07a843f9e1c0a81f9054374a2232aa"),
    ],
    ids=["standard", "site-b-follow-up"],
)
def test_a_tiny_data_set_is_byte_identical_to_the_pinned_one(tmp_path, monkeypatch, options, expected):
    monkeypatch.chdir(tmp_path)  # a relative folder, so that README.txt's "Written by" line is the same anywhere
    config = SynthConfig(out_dir=Path("data"), n_series=2, seed=5, size="small", **options)
    write_synthetic_dataset(config)
    assert _digest(tmp_path / "data") == expected


def test_no_two_streams_share_a_number():
    numbers = [member.value for member in Stream.__members__.values()]  # aliases included
    assert len(numbers) == len(set(numbers)), sorted(numbers)


def test_series_and_data_set_streams_are_not_interchangeable():
    assert series_rng(5, 0, Stream.NOISE).integers(1 << 30) == series_rng(5, 0, Stream.NOISE).integers(1 << 30)
    assert series_rng(5, 0, Stream.NOISE).integers(1 << 30) != series_rng(5, 1, Stream.NOISE).integers(1 << 30)
    with pytest.raises(ValueError, match="DIRECTION_ORDER is drawn once per data set"):
        series_rng(5, 0, Stream.DIRECTION_ORDER)
    with pytest.raises(ValueError, match="NOISE is drawn per series"):
        dataset_rng(5, Stream.NOISE)
    assert DATASET_STREAMS <= set(Stream)


def test_the_generator_draws_only_from_named_streams():
    """A bare ``default_rng([...])`` in the generator would bypass the registry (and its free numbers)."""
    bare = []
    for path in sorted(SYNTH_DIR.glob("*.py")):
        if path.name == "streams.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("default_rng"):
                bare.append(f"{path.name}:{node.lineno}")
    assert not bare, bare
