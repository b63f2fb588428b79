"""Stopping cleanly when the batch system asks: SIGTERM (preemption, time-out) and SIGUSR1.

Slurm sends SIGTERM on preemption and at the time limit (and SIGUSR1 ahead of it with
``--signal=USR1@SECONDS``). Python's default would end the process on the spot: no end line in
the log, workers left behind. Inside :class:`StopRequests` the signal only sets a flag; the work
calls :meth:`StopRequests.check` at its safe points (after a training step, between series),
which raises :class:`Terminated`; the command then closes its workers, writes
``end: terminated by SIGTERM`` and exits with 128 + the signal's number (143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Terminated(Exception):
    """The process was asked to stop; raised at the next safe point.

    Attributes:
        signal_name: e.g. ``"SIGTERM"``.
        exit_code: 128 + the signal's number, what a shell reports for a process it killed.
    """

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        super().__init__(f"terminated by {self.signal_name}")


class StopRequests:
    """While entered (in the main thread), stop signals are recorded instead of killing the process.

    Elsewhere than the main thread (signals can only be handled there) it records nothing and
    :meth:`check` never raises. Handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:  # the first request names the stop
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Terminated` when a stop signal has arrived."""
        if self.signum is not None:
            raise Terminated(self.signum)


def ignore_stop_signals() -> None:
    """For worker processes: a batch system signals every process of the job, but whether and
    when to stop is the main process's call (it then shuts its workers down)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
