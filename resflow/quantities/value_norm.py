"""value_norm: one parameter's norm (params.csv)."""

from resflow.quantities.base import Quantity

QUANTITY = Quantity(
    name="value_norm",
    table="params",
    needs=("value",),
    doc="‖θ‖₂ of the parameter",
    label="‖θ‖",
)
