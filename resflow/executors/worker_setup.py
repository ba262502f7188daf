"""What every worker process runs on, whichever backend started it (the local pool, Ray, Slurm)."""

from __future__ import annotations


def error_text(err: BaseException) -> str:
    """A failed point's error in one line: its type and the first line of its message."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}"


def versions() -> dict:
    """This worker's resflow, torch and Python versions and host (a sweep's meta.json records a
    remote cluster's, which may differ from the machine that started it)."""
    import platform

    import torch

    from resflow._version import __version__

    return {"resflow": __version__, "torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}


def worker_process() -> None:
    """What every worker process (the local pool's or a Ray task's) runs on: one torch thread, and
    glibc's malloc keeping freed memory (resflow._sys.allocator; inherited with fork, set here otherwise)."""
    import torch

    from resflow._sys.allocator import retain_freed_memory

    torch.set_num_threads(1)
    retain_freed_memory()
