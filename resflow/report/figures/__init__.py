"""Matplotlib figures of a results dir's tables.

resflow draws with the Agg canvas and never a pyplot backend, so the MPLBACKEND environment variable
(meant for pyplot) must not fail its figures: matplotlib is imported with MPLBACKEND set aside, then
the value is applied as matplotlib itself would apply it, unless matplotlib refuses it
(`MPLBACKEND=bogus`, which would otherwise fail the import after a run had finished).
"""

import os
import sys


def _import_matplotlib() -> None:
    backend = os.environ.get("MPLBACKEND")
    if "matplotlib" in sys.modules or not backend:
        return
    del os.environ["MPLBACKEND"]  # (for the import only)
    try:
        import matplotlib
    finally:
        os.environ["MPLBACKEND"] = backend
    try:
        matplotlib.rcParams["backend"] = backend  # what matplotlib's import does with it
    except ValueError:
        pass  # not a backend: pyplot would refuse it; resflow's Agg figures do not need one


_import_matplotlib()
