"""grad_to_weight: a block's gradient relative to its weights, ||dloss/dtheta_l|| / ||theta_l|| (what LARS/LAMB scale by)."""

from resflow.quantities.base import Quantity, ratio

QUANTITY = Quantity(
    name="grad_to_weight",
    table="grads",
    needs=("grad", "value"),
    value=ratio,
    doc="‖∂loss/∂θ_l‖₂ / ‖θ_l‖₂ over the block's parameters (the per-layer ratio LARS/LAMB act on); NaN for a block without parameters",
    label="‖∂loss/∂θ‖/‖θ‖",
)
