"""One log file per rank or array task: appended to, fed by the library's loggers, gone after the command."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.logfile import LOGGERS, NO_LOG_FILE, open_log_file
from ct_pipeline.sharding import Shard
from tests.helpers.cli_process import run_ct
from tests.helpers.tiny_luna import SERIES, write_tiny_luna

ROOT = Path(__file__).resolve().parent.parent


def _handlers() -> list[list[logging.Handler]]:
    return [list(logging.getLogger(name).handlers) for name in LOGGERS]


def _messages(path: Path) -> list[str]:
    """Each line without its timestamp: ``label LEVEL: message``."""
    return [line.split(" ", 2)[2] for line in path.read_text().splitlines()]


def test_lines_and_library_warnings_are_appended_and_the_handler_removed(tmp_path):
    before = _handlers()
    path = tmp_path / "logs" / "task.log"
    library = logging.getLogger("ct_pipeline")
    level = library.level
    library.setLevel(logging.WARNING)  # as `ct` without -v leaves it (through the root logger)
    try:
        with open_log_file(path, "shard 1/4") as log:
            log.line("first run")
            logging.getLogger("ct_pipeline.cache").warning("a warning from the library")
            logging.getLogger("ct_pipeline.cache").info("below the level set by ct -v: not written")
            logging.getLogger("somebody.else").warning("not ours: not written")
    finally:
        library.setLevel(level)
    assert _handlers() == before
    with open_log_file(path, "shard 1/4") as log:
        log.line("second run")
    messages = _messages(path)
    assert messages[0].startswith("shard 1/4 INFO: start: shard 1/4 on ")
    assert messages[1:4] == [
        "shard 1/4 INFO: first run",
        "shard 1/4 WARNING: a warning from the library",
        "shard 1/4 INFO: end: ok",
    ]
    assert messages[4].startswith("shard 1/4 INFO: start: ") and messages[5:] == [
        "shard 1/4 INFO: second run",
        "shard 1/4 INFO: end: ok",
    ]


def test_an_error_is_written_re_raised_and_the_handler_still_removed(tmp_path):
    before = _handlers()
    path = tmp_path / "rank-0.log"
    with pytest.raises(BadInputError), open_log_file(path, "rank 0"):
        raise BadInputError("--epochs 0: need at least 1")
    assert _handlers() == before
    assert _messages(path)[-1] == "rank 0 ERROR: end: stopped by BadInputError: --epochs 0: need at least 1"


def test_no_path_means_no_file_and_an_unwritable_one_is_bad_input(tmp_path):
    with open_log_file(None, "rank 0") as log:
        assert log is NO_LOG_FILE
        log.line("goes nowhere")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(BadInputError, match="cannot append to it"), open_log_file(tmp_path / "a_file" / "x.log", "x"):
        pass


def test_prepcache_shard_writes_its_own_log_and_a_rerun_appends(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    log = tmp_path / "logs" / "prepcache-shard-0-of-2.log"
    args = ["prepcache", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"), "--shard", "0/2"]
    before = _handlers()
    for _ in range(2):
        result = run_ct(*args, "--log-file", str(log))
        assert result.exit_code == 0, result.output
    assert _handlers() == before  # nothing left behind by the command
    mine = Shard(0, 2).select(SERIES)
    messages = [m.split(": ", 1)[1] for m in _messages(log)]
    assert [m.split(":")[0] for m in messages if m.startswith(("filled", "cached"))] == (
        [f"filled {uid}" for uid in mine] + [f"cached {uid}" for uid in mine]
    )
    assert messages.count(f"finished: {len(mine)} filled, 0 already cached of {len(mine)} series") == 1
    assert messages.count(f"finished: 0 filled, {len(mine)} already cached of {len(mine)} series") == 1
    assert all(line.split(" ", 2)[2].startswith("shard 0/2 ") for line in log.read_text().splitlines())


def test_the_cli_imports_neither_pandas_nor_torch_until_a_command_runs():
    # `ct --help` builds every command; each must leave its heavy imports to when it runs
    code = "import sys, cli.main; print(sorted({'pandas', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
