"""grad_hist: each parameter's gradient as a histogram (what wandb.watch(log="all") shows), opt-in.

Rows of hist.csv, one per (parameter, bin): BINS equal bins over [min, max] of the gradient's entries
(a constant gradient: one bin holding all of them). Counted on the gradient's device with the
tensor's own `histc` (no torch import here: the registry stays torch-free).
"""

from resflow.quantities.base import Quantity

BINS = 32


def histogram(grad) -> dict[str, list]:
    """{bin_lo, bin_hi, count} of the entries of `grad` (a tensor), BINS bins over their range."""
    g = grad.detach().reshape(-1).float()
    lo, hi = (float(v) for v in g.aminmax())
    if not (lo < hi):  # a constant gradient (or a non-finite one): one bin
        return {"bin_lo": [lo], "bin_hi": [hi], "count": [int(g.numel())]}
    counts = g.histc(bins=BINS, min=lo, max=hi).long().tolist()
    width = (hi - lo) / BINS
    edges = [lo + i * width for i in range(BINS)] + [hi]
    return {"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": counts}


QUANTITY = Quantity(
    name="grad_hist",
    table="hist",
    needs=("grad_tensor",),
    tensor=histogram,
    doc=f"the parameter's gradient entries counted in {BINS} equal bins over their range (hist.csv: bin_lo, bin_hi, count)",
    label="∂loss/∂θ entries",
    scale="linear",
)
