"""SIGTERM (and SIGHUP) stop a command the way Ctrl-C does: as an exception, so cleanup runs.

Python turns SIGINT into KeyboardInterrupt; `stop_on_signals()` makes SIGTERM/SIGHUP raise
`Terminated`, a KeyboardInterrupt subclass, so every `except KeyboardInterrupt`/`finally` that cleans
up after Ctrl-C also runs for `kill`. The exit code is 128 + the signal number (130, 143, 129).
`deferred()` holds a signal back over a few lines that must not be cut in half (a rename swap).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

HANDLED = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal other than SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(err: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + getattr(err, "signum", signal.SIGINT)


def signal_name(err: BaseException) -> str:
    return signal.Signals(getattr(err, "signum", signal.SIGINT)).name


_pending: list[int] = []  # signals held back by `deferred()`
_deferring = [0]


def _raise(signum, frame):
    if _deferring[0]:
        _pending.append(signum)
        return
    raise Terminated(signum) if signum != signal.SIGINT else KeyboardInterrupt()


@contextmanager
def stop_on_signals():
    """Within: SIGTERM/SIGHUP raise Terminated. Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred():
    """Hold SIGINT/SIGTERM/SIGHUP back until the block is done, then act on the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, _raise)
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
        signal.signal(signal.SIGINT, old_int)
        if not _deferring[0] and _pending:
            signum = _pending[0]
            _pending.clear()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt()
            raise Terminated(signum)
