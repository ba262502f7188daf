"""A resflow command run with a full disk at one file: the fault the tests inject, for the docs.

    python scripts/full_disk.py --at params.csv run deep50

Every write to a file whose name starts with `--at` (resflow writes `.NAME.*.tmp`, then renames it)
fails with ENOSPC, as it would on a full disk; everything else is the real `resflow` command, so the
message it prints is the one a full disk gives (tests/test_reliability.py checks it leaves nothing).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

import resflow._sys.files as files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/full_disk.py", description=__doc__.splitlines()[0])
    parser.add_argument("--at", required=True, metavar="FILE", help="the file whose writes fail (params.csv)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the resflow command and its arguments")
    args = parser.parse_args(argv)
    real = files.write_all

    def full(fd: int, data) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("." + args.at):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    files.write_all = full
    from resflow.cli import main as resflow

    sys.argv = ["resflow", *args.command]
    resflow()


if __name__ == "__main__":
    main()
