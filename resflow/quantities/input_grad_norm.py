"""input_grad_norm: the gradient reaching a block's input, ||dloss/dx_l||: the profile resflow is about."""

from resflow.quantities.base import Quantity

QUANTITY = Quantity(
    name="input_grad_norm",
    table="grads",
    needs=("input_grad",),
    doc="‖∂loss/∂x_l‖₂ over the whole batch, x_l the block's input (layer 0: the gradient reaching the network input)",
    label="‖∂loss/∂x‖",
    finite=True,
    leading=True,
)
