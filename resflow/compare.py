"""`resflow.compare`, the public name of `resflow.sweep.compare` (compare runs through the sweep's machinery)."""

from resflow.sweep.compare import load_refs, run_compare, split_ref

__all__ = ["load_refs", "run_compare", "split_ref"]
