"""param_grad_norm: the gradient of a block's parameters, ||dloss/dtheta_l|| over all of them."""

from resflow.quantities.base import Quantity

QUANTITY = Quantity(
    name="param_grad_norm",
    table="grads",
    needs=("grad",),
    doc="‖∂loss/∂θ_l‖₂ over the block's parameters; with `share_weights` the shared parameters' total gradient (the same in every row)",
    label="‖∂loss/∂θ‖",
    finite=True,
    leading=True,
)
