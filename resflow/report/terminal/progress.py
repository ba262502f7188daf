"""Progress of sweeps and compares on stderr: a Rich bar (done/total, elapsed, ETA) on a terminal, else
a plain line every ~5% of the points (CI logs, pipes) and, while a long point runs, a heartbeat line
every RESFLOW_PROGRESS_SECONDS [30] seconds, so a long command is never silent."""

from __future__ import annotations

import os
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from resflow.report.terminal.console import PlainConsole


class SweepProgress:
    def __init__(self, console: Console | None = None, label: str = "points", heartbeat: float | None = None):
        self.console = console or PlainConsole(stderr=True, highlight=False)
        self.label = label
        if heartbeat is None:
            try:
                heartbeat = float(os.environ.get("RESFLOW_PROGRESS_SECONDS", "30"))
            except ValueError:
                heartbeat = 30.0
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.bar: Progress | None = None
        self.total = self.done = 0
        self.every = 1
        self.t0 = time.perf_counter()

    def __enter__(self) -> "SweepProgress":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.stop()

    def _status(self) -> str:
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.done
        eta = f", about {_duration(elapsed / self.done * left)} left" if self.done and left else ""
        return f"{self.done}/{self.total} done, {_duration(elapsed)} elapsed{eta}"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                if self.done < self.total:
                    self.console.print(f"{self.label} {self._status()}; still running", markup=False)

    def start(self, total: int, already: int) -> None:
        self.total, self.done = total, already
        self.every = max(1, total // 20)
        self.t0 = time.perf_counter()
        if already:
            self.console.print(f"resuming: {already} of {total} {self.label} already finished", markup=False)
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("sweep", total=total, completed=already)
            self.bar.start()
        elif self.heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, name="resflow-progress", daemon=True)
            self._thread.start()

    def advance(self, point=None) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.done % self.every == 0 or self.done == self.total:
            name = f" ({point.variant})" if point is not None else ""
            with self._lock:
                self.console.print(f"{self.label} {self._status()}{name}", markup=False)


def _duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
