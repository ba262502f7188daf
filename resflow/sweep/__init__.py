"""Sweeps and their storage: plans of points (plan.py), run and persisted point by point (runner.py).

from resflow.sweep import load_base, make_plan, run_sweep
"""

from resflow.sweep.plan import load_base, make_plan
from resflow.sweep.runner import run_sweep

__all__ = ["load_base", "make_plan", "run_sweep"]
