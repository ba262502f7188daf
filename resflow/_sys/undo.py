"""Writers that cannot stage their output and rename it into place (TensorBoard's event files, which
its own writer creates and appends to in a log dir): what such a writer created is removed again if
it fails or is stopped (Ctrl-C, SIGTERM, a full disk), so "nothing was written" holds for them too."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _entries(root: Path) -> set[tuple[str, int]]:
    """(path, inode) of `root` and everything below it (links not followed); empty if it is missing."""
    found = set()
    if not os.path.lexists(root):
        return found
    found.add((str(root), os.lstat(root).st_ino))
    if not root.is_dir() or root.is_symlink():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                found.add((path, os.lstat(path).st_ino))
            except OSError:
                pass
    return found


def remove_new(root: Path, before: set[tuple[str, int]]) -> None:
    """Remove what is below `root` (and `root` itself) but not in `before`: files and links first,
    then the dirs made since, deepest first, if they are empty by then."""
    root = Path(root)
    now = _entries(root)
    new = [path for path, ino in now if (path, ino) not in before]
    for path in sorted(new, key=len, reverse=True):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # (only if empty: a dir holding anything older stays)
            else:
                os.unlink(path)
        except OSError:
            pass


@contextmanager
def removed_on_failure(root: Path):
    """Within the block, files and dirs created under `root` (or `root` itself) are removed again if
    the block raises (any exception, KeyboardInterrupt and SystemExit included); kept if it ends."""
    root = Path(root)
    before = _entries(root)
    try:
        yield
    except BaseException:
        remove_new(root, before)
        raise


def replace_dir(path: Path, fill) -> None:
    """`path` becomes a dir holding exactly what `fill(staging_dir)` writes: staged beside it, then
    swapped in, an earlier `path` moved aside and deleted only once the new one is in place (put back
    if anything fails), so nothing of the earlier dir survives in the new one and nothing is half-done."""
    from resflow._sys.signals import deferred

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-{os.getpid()}-", dir=path.parent))
    old = None
    try:
        fill(staging)
        with deferred():  # a signal here waits until the swap is whole
            if os.path.lexists(path):
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def set_aside(path: Path):
    """Move `path` (if it exists) aside for the block: deleted if the block ends, put back (and what
    the block made at `path` removed) if it raises. For a writer that must start from an empty `path`
    but may not lose the earlier one to a failure."""
    path = Path(path)
    if not os.path.lexists(path):
        with removed_on_failure(path):
            yield
        return
    aside = path.parent / f".{path.name}.old-{os.getpid()}"
    os.replace(path, aside)
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
