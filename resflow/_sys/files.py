"""Atomic file writes: a temp file beside the target, fsync, rename; with the modes a plain open() gives."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())



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
    have had under the umask, so results are as readable as the user's other files."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    except OSError:  # a file system without modes (vfat, some network mounts): the mode is a nicety
        pass


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """Yield a temp path beside `path` (mode as under the umask) to write into; on success it is
    renamed over `path`, on any error or interrupt removed. A reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        shareable(tmp)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`text` into `path`, atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        _fsync_write(tmp, text)
