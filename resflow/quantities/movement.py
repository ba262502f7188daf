"""movement: how far a parameter has moved since the first step, ||theta_s - theta_0|| (training runs)."""

from resflow.quantities.base import Quantity

QUANTITY = Quantity(
    name="movement",
    table="params",
    needs=("moved",),
    doc="‖θ_s − θ_0‖₂: how far the parameter has moved since initialisation (training runs)",
    label="‖θ−θ₀‖",
)
