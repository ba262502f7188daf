"""One writer per results dir: a lock file beside it, `.<name>.lock`, held while the dir is written.

    with results_lock(out):      # ResflowError if another live process holds it
        ...write out...

The lock is an `flock` on that file, so the OS releases it when its process dies however it dies;
a lock file left behind by a killed process is found unlocked, reported as stale and taken over.
The file holds the owner's pid, host, start time and command, for the refusal message and to tell
a dead owner: a lock still flocked (by a process forked from the owner that outlived it) whose
recorded owner is gone, on this host, is taken over too. Processes forked while a lock is held
(sweep workers, helpers) close their copy of its descriptor at once (`os.register_at_fork`), so they
never hold it. The lock file is opened without following a symbolic link and must be a regular
file: a link planted at the lock's path is refused, never written through. It is removed on
release (after checking that it is still ours).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from resflow.errors import ConfigError, ResflowError, environment_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: locks are advisory no-ops
    fcntl = None

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_held: set[int] = set()  # descriptors of the locks this process holds: closed in every forked child


def _close_held_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)  # (only this process's copy: the parent keeps its lock)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def lock_path(out: Path) -> Path:
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def read_owner(path: Path) -> dict:
    """The owner record of a lock file (read without following a link), or {}."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return {}
    try:
        return _read_record(fd)
    finally:
        os.close(fd)


def _read_record(fd: int) -> dict:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = json.loads(os.pread(fd, 64 * 1024, 0).decode())
        return data if isinstance(data, dict) else {}
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


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22 of the whole line
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (another user's counts: EPERM means alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def owner_gone(owner: dict) -> bool:
    """True if the lock's recorded owner is known to be dead: same host, and its pid is not running
    (or is a zombie, or is a newer process that reused the pid). Unknown -> False (refuse)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return True  # killed, not yet reaped by its parent
    except (OSError, IndexError):
        pass
    started = owner.get("pid_start")
    return started is not None and process_start(pid) not in (None, started)


@contextmanager
def results_lock(out: Path, note: Callable[[str], None] | None = None):
    """Hold the lock of results dir `out` for the block; refuse if a live process holds it."""
    path = lock_path(out)
    created = _make_parents(path.parent, out)
    try:
        fd = _acquire(path, out, note)
    except BaseException:
        _remove_dirs(created)
        raise
    try:
        yield path
    finally:
        _release(path, fd)
        if not Path(out).exists():  # nothing was written: take back the dirs we made
            _remove_dirs(created)


def _remove_dirs(created: list[Path]) -> None:
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


def _open(path: Path, out: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as err:
        if path.is_symlink():  # ELOOP (or EMLINK on some BSDs): never written through
            raise ConfigError(
                f"the lock file {str(path)!r} of {str(out)!r} is a symbolic link; refusing to write "
                "through it (remove it, or choose another --out)"
            ) from None
        raise ConfigError(f"output path {str(out)!r} is not writable ({err.strerror or err})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(
            f"the lock file {str(path)!r} of {str(out)!r} is not a regular file; refusing to use it "
            "(remove it, or choose another --out)"
        )
    return fd


def _acquire(path: Path, out: Path, note) -> int:
    took_over = None
    for _ in range(20):  # retried when the file is removed between open and lock (by its owner, or a takeover)
        fd = _open(path, out)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_record(fd)
            if owner_gone(owner):  # flocked by a process its dead owner forked: take it over
                _take_over(path, fd)
                os.close(fd)
                took_over = owner
                continue
            os.close(fd)
            raise ResflowError(
                f"{str(out)!r} is being written by another resflow process ({_describe(owner)}); "
                f"wait for it to finish, or pass --out to write elsewhere"
            ) from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file after we opened it: start again
            os.close(fd)
            continue
        old = took_over or _read_record(fd)
        if old.get("pid") and note is not None:
            still = "; a process it started still held it" if took_over else ""
            note(f"note: took over a stale lock on {str(out)!r} left by a process that is gone ({_describe(old)}{still})")
        record = dict(
            pid=os.getpid(),
            pid_start=process_start(os.getpid()),
            host=socket.gethostname(),
            started=time.strftime("%Y-%m-%d %H:%M:%S"),
            command=" ".join(["resflow", *sys.argv[1:]]),
        )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as err:  # a full disk: say where, and leave no empty lock file behind
            _release(path, fd)
            fault = environment_error(err, path=out, doing="cannot start writing")
            raise fault or ResflowError(f"cannot lock {str(out)!r}: {err.strerror or err}") from None
        _held.add(fd)
        return fd
    raise ResflowError(f"cannot lock {str(out)!r}: its lock file keeps changing; is another resflow writing it?")


def _take_over(path: Path, fd: int) -> None:
    """Remove the lock file `fd` has open (a dead owner's) if it is still the one at `path`; under an
    flock of the parent dir, so two processes taking over at once cannot remove each other's new file."""
    guard = None
    try:
        guard = os.open(path.parent, os.O_RDONLY | CLOEXEC)
        fcntl.flock(guard, fcntl.LOCK_EX)
    except OSError:  # a file system without flock on dirs: the check below still holds, without the guard
        pass
    try:
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    finally:
        if guard is not None:
            os.close(guard)


def _release(path: Path, fd: int) -> None:
    _held.discard(fd)
    try:
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)  # closing releases the flock
