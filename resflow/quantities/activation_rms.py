"""activation_rms: the size of a block's input per entry, sqrt(mean(x_l^2)) = ||x_l|| / sqrt(numel)."""

import math

from resflow.quantities.base import Quantity


def activation_rms(norm: float, numel: int) -> float:
    """sqrt(mean(x^2)) from ||x|| and x's number of elements."""
    return norm / math.sqrt(numel) if numel else math.nan


QUANTITY = Quantity(
    name="activation_rms",
    table="grads",
    needs=("input", "numel"),
    value=activation_rms,
    doc="√mean(x_l²)",
    label="rms(x)",
    finite=True,
    leading=True,
)
