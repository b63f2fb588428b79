"""One plain-text log file per process of a batch job: per training rank, per array task.

In a cluster job every rank or array task keeps its own file, so a failed task's story can be
read without untangling interleaved output. The file gets, with a timestamp and the process's
label (``rank 1``, ``shard 3/16``):

* the lines the command shows on the console (epoch lines, per-series outcomes), written
  through :meth:`LogFile.line`, on every rank (the console shows rank 0 only);
* the ``ct_pipeline`` and ``cli`` loggers' records (warnings; more with ``ct -v`` / ``--debug``);
* a start line (host, pid, argv) and an end line (ok; ``N of M series failed`` for a batch with
  failures; ``terminated by SIGTERM``; or the error that stopped the process).

Files are appended to, never truncated: a resumed run or a re-run array task adds to its log.
The handler lives only inside :func:`open_log_file`, so nothing is left behind after a command
(tests run the CLI many times in one process).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ct_pipeline.errors import BadInputError
from ct_pipeline.preemption import Terminated

# The loggers whose records a log file receives (the library's and the command line's).
LOGGERS = ("ct_pipeline", "cli")


class LogFile:
    """An open log file; ``path`` None stands for "no log file" and every method does nothing."""

    def __init__(self, path: Path | None = None, handler: logging.Handler | None = None, name: str = "ct") -> None:
        self.path = path
        self._handler = handler
        self._name = name
        self.outcome = "ok"  # the end line's text when the block ends without an error

    def finished_with(self, outcome: str) -> None:
        """Say how the work ended when it did not raise, e.g. ``"2 of 9 series failed"`` (default "ok")."""
        if self._handler is not None:  # NO_LOG_FILE is shared: it keeps no state
            self.outcome = outcome

    def line(self, text: str, level: int = logging.INFO) -> None:
        """Write one line to the file only (the caller has shown it on the console, or chose not to)."""
        if self._handler is None:
            return
        record = logging.LogRecord(self._name, level, __file__, 0, text, None, None)
        self._handler.handle(record)


NO_LOG_FILE = LogFile()


@contextmanager
def open_log_file(path: os.PathLike | str | None, label: str) -> Iterator[LogFile]:
    """Append this process's log to ``path`` for the duration of the ``with`` block.

    Args:
        path: the file (its folder is created); None: no file, yields :data:`NO_LOG_FILE`.
        label: who writes, shown on every line, e.g. ``"rank 1"`` or ``"shard 3/16"``.

    Raises:
        BadInputError: the file cannot be opened for appending.
    """
    if path is None:
        yield NO_LOG_FILE
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, mode="a", encoding="utf-8")  # append: never truncate a log
    except OSError as err:
        raise BadInputError(f"log file {target}: cannot append to it ({err}); give a writable path") from err
    safe_label = label.replace("%", "%%")
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {safe_label} %(levelname)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    )
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    log_file = LogFile(target, handler, name=f"ct.{label}")
    log_file.line(f"start: {label} on {socket.gethostname()} pid {os.getpid()}: {' '.join(sys.argv)}")
    try:
        yield log_file
    except Terminated as err:  # asked to stop (preemption): not an error of the run
        log_file.line(f"end: {err}", logging.WARNING)
        raise
    except BaseException as err:  # written, then re-raised: the caller decides what it means
        message = str(err) or "no message"
        log_file.line(f"end: stopped by {type(err).__name__}: {message}", logging.ERROR)
        raise
    else:
        log_file.line(f"end: {log_file.outcome}", logging.INFO if log_file.outcome == "ok" else logging.WARNING)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
