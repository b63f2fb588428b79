"""`--shard K/N` for array jobs: disjoint shards that together cover every item once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ct_pipeline.errors import BadInputError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based, as $SLURM_ARRAY_TASK_ID with --array=0-(N-1)) of ``count``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            index_text, count_text = text.split("/")
            shard = cls(int(index_text), int(count_text))
        except ValueError as err:
            raise BadInputError(f"--shard {text!r} is not K/N (e.g. 0/8 for the first of 8 shards)") from err
        if shard.count < 1 or not 0 <= shard.index < shard.count:
            raise BadInputError(f"--shard {text!r}: need N >= 1 and 0 <= K < N (K counts from 0)")
        return shard

    def select(self, items: Sequence[str]) -> list[str]:
        """Every N-th item of the sorted items, starting at K: stable whatever order they came in."""
        return sorted(items)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
