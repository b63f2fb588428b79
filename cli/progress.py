"""What a long command is doing, on stderr: a progress bar on a terminal, a line per stage otherwise.

`ct diagnose` and `ct compare`: a batch job's log then reads ``[3/20] UID: classification (3568
candidates)``; a person at a terminal sees the stage, the series and a bar over the U-Net's slices and
the candidates. `ct prepcache`: a bar over the series on a terminal (its log file has a line per series).
"""

from __future__ import annotations

import sys

import typer

from ct_pipeline.diagnosis.progress import UNITS, SeriesProgress


class ProgressDisplay:
    """A sink for :class:`SeriesProgress` records. ``mode``: "bar", "lines" or "off"."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._bar = None
        self._task = None
        self._stage: tuple[int, str, bool] | None = None

    @classmethod
    def on_stderr(cls, quiet: bool) -> ProgressDisplay:
        """Off with ``quiet``, a bar when stderr is a terminal, lines when it is not."""
        if quiet:
            return cls("off")
        return cls("bar" if sys.stderr.isatty() else "lines")

    def __call__(self, event: SeriesProgress) -> None:
        if self.mode == "lines":
            counted = event.stage in UNITS
            if event.done == 0 and (event.total > 0 or not counted):
                count = f" ({event.total} {event.unit})" if event.total else ""
                typer.echo(f"[{event.position}/{event.n_series}] {event.label}: {event.stage}{count}", err=True)
        elif self.mode == "bar":
            self._show(event)

    def count(self, description: str, done: int, total: int) -> None:
        """``done`` of ``total`` items (e.g. prepcache's series): a bar on a terminal, nothing otherwise
        (the command prints its own summary and failures, its --log-file a line per item)."""
        if self.mode == "bar":
            self._draw((0, description, True), description, done, total, "")

    def _show(self, event: SeriesProgress) -> None:
        label = event.label if len(event.label) <= 16 else "..." + event.label[-13:]
        self._draw(
            (event.position, event.stage, event.total > 0),
            f"{event.position}/{event.n_series} {label} {event.stage}",
            event.done,
            event.total,
            event.unit if event.total else "",
        )

    def _draw(self, stage: tuple[int, str, bool], description: str, done: int, total: int, unit: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._stage = None
        if stage != self._stage:  # a task per stage: its own total and clock
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(description, total=total or None, unit=unit)
            self._stage = stage
        self._bar.update(self._task, completed=done)

    def pause(self) -> None:
        """Take the bar off the screen (before printing results); the next record brings it back."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None
