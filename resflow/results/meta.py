"""meta.json: where and how a result was made, built in one place for runs, training, sweeps and compares."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
import time
from datetime import datetime

from resflow._version import __version__


@functools.cache
def package_version(name: str) -> str | None:
    """An installed distribution's version (torch's without importing torch), or None. Looked up
    once per process: the lookup scans sys.path's metadata (ms), and a sweep's worker makes a meta
    per point."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_meta(started: datetime, t0: float, **fields) -> dict:
    """Versions and platform, the caller's `fields` (kind, device, seeds, axes...), then the start,
    the wall time since `t0` (a perf_counter reading) and the command line."""
    return dict(
        resflow=__version__,
        torch=package_version("torch"),
        python=platform.python_version(),
        platform=platform.platform(),
        **fields,
        started=started.isoformat(timespec="seconds"),
        wall_time_s=round(time.perf_counter() - t0, 6),
        command=" ".join(sys.argv),
    )
