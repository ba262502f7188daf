"""Keep freed memory in the process, so that each step reuses it instead of page-faulting it back.

glibc's malloc hands blocks of 128 KiB and more (a width-256 weight's gradient is 256 KiB) to the
OS with mmap and returns them on free, and it trims the top of the heap; its thresholds then move
with what was freed last. A forward+backward that frees and reallocates its tensors every step can
so page-fault all that memory again each step, how often depending on what else was alive (a
recorder's bookkeeping, an earlier benchmark); docs/performance.md has the numbers. Fixed thresholds (the largest mmap
threshold glibc accepts; no trimming) make it steady: peak memory is unchanged, freed memory stays
with the process for the next step, as PyTorch's own CUDA caching allocator does on a GPU.

Called by the CLI before it runs anything and by the sweep's workers; `python -m benchmarks`
measures with it and reports the page faults. A no-op where the C library is not glibc.

`freeze_imports()` is the same idea for Python's cyclic garbage collector: torch and pandas bring
hundreds of thousands of long-lived objects, and every full collection walks them all (every few
runs of a sweep point) and, in a forked sweep worker, writes to their headers, so
the pages they share with the parent are copied. Frozen (gc.freeze), they are skipped.
"""

from __future__ import annotations

import ctypes
import gc
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30  # never give the heap's top back within a run
TOP_PAD = 16 << 20  # grow the heap in 16 MiB steps


def _glibc(name: str):
    """glibc's function `name` in this process, or None (not Linux, or a C library without it: musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)  # the C library this process already uses
    except (OSError, AttributeError, TypeError):
        return None


def retain_freed_memory() -> bool:
    """Set glibc's malloc thresholds as above; True if they were set (Linux with glibc)."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    )


def freeze_imports() -> None:
    """Move every object alive now (the imported modules' and the like) out of the collector's reach.

    (No collection first: after the imports there is almost nothing to free, and it walks everything.)
    """
    gc.freeze()


def settle_process(*modules: str, retain_memory: bool = True) -> bool:
    """What a resflow process does before it runs anything (the CLI, the benchmarks): the malloc
    settings (unless `retain_memory` is False), the caller's `modules` imported (by name: this layer
    imports none of resflow's higher ones), and all of that frozen. True if the malloc settings took."""
    import importlib

    tuned = retain_freed_memory() if retain_memory else False
    for name in modules:
        importlib.import_module(name)
    freeze_imports()
    return tuned


def release_free_memory() -> bool:
    """Hand the free memory the process keeps back to the OS (glibc malloc_trim); True if done.

    Before forking workers: a child writing into a free page it shares with its parent pays a
    copy of it; into a released one, only a fresh zero page.
    """
    malloc_trim = _glibc("malloc_trim")
    return bool(malloc_trim(0)) if malloc_trim is not None else False
