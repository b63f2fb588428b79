"""torchrun entry of the DDP test: ``python -m tests.helpers.ddp_train DIGESTS ARGS...`` runs `ct ARGS` on
this rank, then writes the SHA-256 of this rank's final weights to ``DIGESTS/rank<R>.sha256``.

Only rank 0 saves checkpoints, so the test needs every rank's weights from somewhere else; the
library has no hook for it. This records the model the loop hands to ``sync_buffers`` after each
training epoch on every rank (validation does not change weights), and digests it once the
command has finished. A run that does not finish writes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cli.main import app
from ct_pipeline.training import loop
from ct_pipeline.training.epoch import weights_digest


def main(digests: Path, argv: list[str]) -> int:
    trained = []
    sync_buffers = loop.sync_buffers

    def recording(model, ctx) -> None:
        trained[:] = [model]
        sync_buffers(model, ctx)

    loop.sync_buffers = recording
    try:
        app(args=argv)
    except SystemExit as ended:
        code = ended.code or 0
    else:
        code = 0
    if code == 0 and trained:
        digests.mkdir(parents=True, exist_ok=True)
        (digests / f"rank{os.environ.get('RANK', '0')}.sha256").write_text(weights_digest(trained[0]) + "\n")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
