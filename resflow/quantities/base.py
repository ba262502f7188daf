"""What a measured quantity is: a `Quantity` record, and the primitives the recorder measures for it.

The recorder (resflow.measure) takes a small fixed set of norms, fused, where the tensors are hot;
a quantity says which of them it needs and turns their floats into its own with plain arithmetic.
Torch-free (results and report import this; they never import torch).

Primitives of a site (a block: one grads.csv row), all Python floats:
    input_grad  ||dloss/dx_l||, x_l the block's input
    input       ||x_l||
    numel       the entries of x_l
    grad        ||dloss/dtheta_l|| over the block's parameters (their gradients' norms combined)
    value       ||theta_l||, over the block's parameters
and, per parameter (a params.csv row), `grad` and `value` of that parameter alone. Opt-in (measured
only when a quantity needing them is asked for; they cost a copy of the parameters):
    update      ||theta after the optimizer step - theta before it||
    before      ||theta|| before the optimizer step
    moved       ||theta - theta at the first step||
per parameter and, combined over a block's parameters, per site. `grad_tensor` (opt-in, per
parameter) is the gradient tensor itself, for quantities whose value is not a norm (histograms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

SITE_PRIMITIVES = ("input_grad", "input", "numel", "grad", "value", "update", "before", "moved")
PARAM_PRIMITIVES = ("grad", "value", "update", "before", "moved")
STEP_PRIMITIVES = ("update", "before")  # measured across the optimizer step: a copy of the parameters
OPT_IN_PRIMITIVES = (*STEP_PRIMITIVES, "moved", "grad_tensor")
TABLES = ("grads", "params", "hist")  # grads.csv: one row per site; params.csv: one per parameter; hist.csv: bins


@dataclass(frozen=True)
class Quantity:
    """One measured quantity: its column, what it is made of, and how tables, figures and trackers show it."""

    name: str  # its column in `table`, its name in `resflow show --measure NAME`
    table: str  # "grads" (one value per site), "params" (one per parameter) or "hist" (rows per parameter)
    needs: tuple[str, ...]  # the primitives `value` takes, in this order (see the module doc)
    doc: str  # one line, for the generated results docs (docs/results.md)
    label: str  # a table header or axis label
    value: Callable[..., float] | None = None  # the primitives' floats -> this quantity's; None: the one need itself
    unit: str = ""  # e.g. "per step"; "" for a plain norm
    scale: str = "log"  # "log" or "linear": tables' bars and figures' y-axes
    tensorboard: str | None = ""  # the tag prefix per layer ("" : the name; None: not logged)
    finite: bool = False  # a non-finite value makes the summary's `finite` False
    leading: bool = False  # a column before the config columns (the original three; new ones are appended)
    good: tuple[float, float] | None = None  # a rule-of-thumb range: terminal tables mark values outside it
    figure: bool = True  # drawn per layer in figures and the HTML report (grads table)
    tensor: Callable | None = None  # `grad_tensor` quantities: (gradient tensor) -> rows; torch via tensor methods

    @property
    def tag(self) -> str | None:
        """The TensorBoard / tracker tag prefix, or None if this quantity is not logged."""
        return None if self.tensorboard is None else (self.tensorboard or self.name)

    @property
    def opt_in(self) -> bool:
        """Whether it needs an opt-in primitive (not measured unless asked for)."""
        return any(n in OPT_IN_PRIMITIVES for n in self.needs)

    def values(self, primitives: dict[str, list]) -> list[float] | None:
        """This quantity per row from the rows' primitives ({name: values}); None if one is missing."""
        if any(n not in primitives for n in self.needs):
            return None
        if self.value is None:
            return list(primitives[self.needs[0]])
        return [self.value(*args) for args in zip(*(primitives[n] for n in self.needs))]


def ratio(num: float, den: float) -> float:
    """num / den, NaN where den is 0 or NaN (a block without parameters, a zero weight)."""
    return num / den if den > 0 else math.nan
