"""grad_norm: one parameter's gradient norm (params.csv)."""

from resflow.quantities.base import Quantity

QUANTITY = Quantity(
    name="grad_norm",
    table="params",
    needs=("grad",),
    doc="‖∂loss/∂θ‖₂ of the parameter",
    label="‖∂loss/∂θ‖",
)
