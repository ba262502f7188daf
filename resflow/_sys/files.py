"""Atomic file writes: a temp file beside the target, fsync, rename; with the modes a plain open() gives.

The temp file is created exclusively and never through a link (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW),
written and chmod'ed through its descriptor, and renamed only if its name still is that file: a
link swapped in by another process is never written through nor renamed into place. A write the
environment refuses (disk full, name too long) is an EnvironmentFault naming the destination.

What is at the destination must be absent or a regular file (`not_replaceable`): a symbolic link, a
directory, a device, a FIFO or a socket is never replaced (checked before the write and again just
before the rename), so `--out /dev/null` or a planted link is a one-line refusal, not a new file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from resflow.errors import ConfigError, ResflowError, environment_error

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def not_replaceable(path) -> str | None:
    """What `path` is if a file resflow writes must not replace it ("a symbolic link", "a directory",
    "a device", "a FIFO", "a socket"; looked at without following a link), or None: absent, or a
    regular file. The rule every writer shares: only regular files are ever replaced."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent (or not reachable: the write itself will say why)
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def check_replaceable(path) -> None:
    """A one-line ConfigError if `path` is anything but absent or a regular file (not_replaceable)."""
    kind = not_replaceable(path)
    if kind is not None:
        raise ConfigError(
            f"{str(path)!r} is {kind}; resflow replaces only regular files, never a link, directory, "
            "device, FIFO or socket: choose another path"
        )


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def umask() -> int:
    """This process's umask, read without changing it (Linux); else set and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path, directory: bool = False) -> None:
    """Give a temp file or dir (mkstemp's 0600, mkdtemp's 0700) the mode a plain open()/mkdir() would
    have had under the umask, so results are as readable as the user's other files. `path` may be an
    open file's descriptor (changed through it: never through a link put in its place)."""
    try:
        mode = (0o777 if directory else 0o666) & ~umask()
        os.fchmod(path, mode) if isinstance(path, int) else os.chmod(path, mode)
    except OSError:  # a file system without modes (vfat, some network mounts): the mode is a nicety
        pass


@contextmanager
def atomic_file(path: Path, suffix: str = ".tmp"):
    """Yield a binary file open on a new temp file beside `path` (mode as under the umask) to write
    into; on success it is fsync'ed and renamed over `path` (only ever a regular file: a link, a
    device, a dir at `path` is refused, see not_replaceable), on any error or interrupt removed. A
    reader never sees half a file."""
    path = Path(path)
    check_replaceable(path)
    fh, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        fh = os.fdopen(fd, "wb")
        shareable(fd)
        yield fh
        fh.flush()
        os.fsync(fd)
        if os.stat(tmp, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:  # swapped for a link or another file
            raise ResflowError(
                f"the temp file {tmp!r} was replaced by another process while resflow wrote it; {str(path)!r} is left as it was"
            )
        fh.close()
        check_replaceable(path)  # again: a link or device put there while it was written is left alone
        os.replace(tmp, path)
    except BaseException as err:
        if fh is not None and not fh.closed:
            try:
                fh.close()
            except OSError:
                pass
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        fault = environment_error(err, path) if isinstance(err, OSError) else None
        if fault is not None:
            raise fault from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`text` into `path`, atomically (see atomic_file)."""
    with atomic_file(path) as fh:
        write_all(fh.fileno(), text.encode("utf-8"))
