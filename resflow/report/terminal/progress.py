"""Sweep progress on stderr: a Rich bar (points done/total, elapsed, ETA) on a terminal, else a
plain line every ~5% of the points (CI logs, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SweepProgress:
    def __init__(self, console: Console | None = None, label: str = "points"):
        self.console = console or Console(stderr=True, highlight=False)
        self.label = label
        self.bar: Progress | None = None
        self.total = self.done = 0
        self.every = 1
        self.t0 = time.perf_counter()

    def __enter__(self) -> "SweepProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, total: int, already: int) -> None:
        self.total, self.done = total, already
        self.every = max(1, total // 20)
        self.t0 = time.perf_counter()
        if already:
            self.console.print(f"resuming: {already} of {total} {self.label} already finished", markup=False)
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.bar.add_task("sweep", total=total, completed=already)
            self.bar.start()

    def advance(self, point=None) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.done % self.every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self.t0
            name = f" ({point.variant})" if point is not None else ""
            self.console.print(f"{self.label} {self.done}/{self.total} done{name}, {elapsed:.1f} s", markup=False)
