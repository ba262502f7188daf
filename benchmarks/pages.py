"""Docs sections a benchmark writes: between `<!-- NAME:start -->` and `<!-- NAME:end -->` in a page,
headed by the command, commit, machine and load that produced them (figures that depend on the
machine and its load, so never byte-checked in CI, and never typed by hand)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def commit() -> str:
    """The checkout's short commit ('+ local changes' when its tracked files differ): take it when
    the measuring starts, so that an edit made while a long benchmark runs is not blamed on it."""
    from benchmarks.run import _commit

    return _commit()


def where(command: str, setting: str, loads: tuple[float, float], at: str) -> str:
    """One line: the command, the commit `at` which it ran, when, the machine, `setting`, the load."""
    return (
        f"`{command}` at commit {at}, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, {setting}; "
        f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end."
    )


def check(page: Path, name: str) -> None:
    """Refuse, before anything is measured, a page that has no `name` markers to write between."""
    start_mark, end_mark = markers(name)
    doc = page.read_text() if page.is_file() else ""
    if start_mark not in doc or end_mark not in doc:
        raise SystemExit(f"{page}: no {start_mark} ... {end_mark} markers to write between")


def write_section(page: Path, name: str, text: str) -> None:
    """`text` between the page's `name` markers; the rest of the page as it was."""
    check(page, name)
    start_mark, end_mark = markers(name)
    doc = page.read_text()
    start, end = doc.index(start_mark) + len(start_mark), doc.index(end_mark)
    page.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
