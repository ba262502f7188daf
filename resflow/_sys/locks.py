"""One writer per results dir: a lock file beside it, `.<name>.lock`, held while the dir is written.

    with results_lock(out):      # ResflowError if another live process holds it
        ...write out...

The lock is an `flock` on that file, so the OS releases it when its process dies however it dies;
a lock file left behind by a killed process is found unlocked, reported as stale and taken over.
The file holds the owner's pid, host, start time and command, for the refusal message. It is
removed on release (after checking that it is still ours).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from resflow.errors import ConfigError, ResflowError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: locks are advisory no-ops
    fcntl = None


def lock_path(out: Path) -> Path:
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def read_owner(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    parts = [f"pid {owner['pid']}" if "pid" in owner else "another process"]
    if owner.get("host") and owner.get("host") != socket.gethostname():
        parts.append(f"on {owner['host']}")
    if owner.get("started"):
        parts.append(f"since {owner['started']}")
    if owner.get("command"):
        parts.append(f"`{owner['command']}`")
    return ", ".join(parts)


@contextmanager
def results_lock(out: Path, note: Callable[[str], None] | None = None):
    """Hold the lock of results dir `out` for the block; refuse if a live process holds it."""
    path = lock_path(out)
    created = _make_parents(path.parent, out)
    fd = _acquire(path, out, note)
    try:
        yield path
    finally:
        _release(path, fd)
        if not Path(out).exists():  # nothing was written: take back the dirs we made
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    break


def _make_parents(parent: Path, out: Path) -> list[Path]:
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"output path {str(out)!r} cannot be created: {str(p)!r} is a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output path {str(out)!r} cannot be created ({err.strerror or err})") from None
    return list(reversed(missing))


def _acquire(path: Path, out: Path, note) -> int:
    for _ in range(20):  # retried only when another process removes the file between open and lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"output path {str(out)!r} is not writable ({err.strerror or err})") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            owner = read_owner(path)
            raise ResflowError(
                f"{str(out)!r} is being written by another resflow process ({_describe(owner)}); "
                f"wait for it to finish, or pass --out to write elsewhere"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file after we opened it: start again
            os.close(fd)
            continue
        old = read_owner(path)
        if old.get("pid") and note is not None:
            note(f"note: took over a stale lock on {str(out)!r} left by a process that is gone ({_describe(old)})")
        record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                      command=" ".join(["resflow", *sys.argv[1:]]))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd
    raise ResflowError(f"cannot lock {str(out)!r}: its lock file keeps changing; is another resflow writing it?")


def _release(path: Path, fd: int) -> None:
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)  # closing releases the flock
