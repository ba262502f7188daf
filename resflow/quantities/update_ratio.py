"""update_ratio: the optimizer step relative to the weights, ||theta_{s+1} - theta_s|| / ||theta_s||.

Per parameter (params.csv) and per block, over its parameters (grads.csv). Measured across the
optimizer step, so it costs a copy of the parameters while the step runs: built-in training runs
always take it; `resflow.watch(..., quantities=["update_ratio"])` opts in. The rule of thumb is ~1e-3 per step:
terminal tables mark a block outside 1e-5..3e-2 (one whose weights barely move, or lurch).
"""

from resflow.quantities.base import Quantity, ratio

DOC = "‖θ_(s+1) − θ_s‖₂ / ‖θ_s‖₂ {}: the optimizer step taken with this row's gradient; NaN at a run's last step and where ‖θ_s‖ = 0"
GOOD = (1e-5, 3e-2)  # ~1e-3 per step is the usual rule of thumb; a 1e-6 layer barely moves, a 1e-1 one lurches

QUANTITIES = (
    Quantity(
        name="update_ratio",
        table="params",
        needs=("update", "before"),
        value=ratio,
        doc=DOC.format("of the parameter"),
        label="‖Δθ‖/‖θ‖",
        unit="per step",
        good=GOOD,
    ),
    Quantity(
        name="update_ratio",
        table="grads",
        needs=("update", "before"),
        value=ratio,
        doc=DOC.format("over the block's parameters"),
        label="‖Δθ‖/‖θ‖",
        unit="per step",
        good=GOOD,
    ),
)
