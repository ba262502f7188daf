"""Measured vs predicted per-layer slope for the shipped theory configs (README "Theory").

    python examples/theory_check.py
    python examples/theory_check.py --small   # one seed, width 64: checks that it still runs (tests)

For each config: run it, fit ln ‖∂loss/∂x_l‖ against l (the measured slope, median over seeds), and
put it beside −ln(χ₁)/2 (plain stacks at their fixed point) and the recursion's own fitted slope.
"""

import math
import sys

import numpy as np

from resflow import load_config, run

SMALL = ["seeds=1", "model.width=64"] if "--small" in sys.argv[1:] else []
CONFIGS = ["theory-tanh-ordered", "theory-tanh-critical", "theory-tanh-chaotic", "theory-residual-relu"]

print(
    f"{'config':24s} {'χ₁':>8s} {'−ln(χ₁)/2':>10s} {'predicted slope':>16s} {'measured slope':>15s} "
    f"{'first/last pred':>15s} {'measured':>10s} {'log err':>8s}"
)
for name in CONFIGS:
    s = run(load_config(name, SMALL)).summary
    measured = float(np.median(-np.log(s["gain_per_layer"])))
    predicted = -math.log(float(s["predicted_gain_per_layer"].iloc[0]))
    chi1 = float(s["chi1"].iloc[0])  # NaN for residual stacks: no single fixed-point factor
    mf = f"{-math.log(chi1) / 2:+.4f}" if math.isfinite(chi1) else "—"
    ratio, pratio = float(np.median(s["grad_ratio"])), float(s["predicted_grad_ratio"].iloc[0])
    diff = abs(math.log(ratio) - math.log(pratio))
    err = f"{diff / abs(math.log(pratio)):.1%}" if abs(math.log(pratio)) > 0.05 else f"Δ{diff:.3f}"
    print(f"{name:24s} {chi1:8.4f} {mf:>10s} {predicted:+16.4f} {measured:+15.4f} {pratio:15.4g} {ratio:10.4g} {err:>8s}")
