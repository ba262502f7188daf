"""Xiong et al. 2020 at initialisation: the gradient of the last block's FFN output weights
(params.csv `ffn.out.weight` at layer depth-1) against depth, for pre-LN and post-LN.
Theory: roughly constant for post-LN, ~ 1/sqrt(L) for pre-LN. Prints the series and fitted slopes.

    PYTHONPATH=. python examples/xiong_depth.py
    PYTHONPATH=. python examples/xiong_depth.py --small   # depths 3 and 6, one seed: does it still run
"""

import sys

import numpy as np
import pandas as pd

from resflow import load_config, run

SMALL = "--small" in sys.argv[1:]
DEPTHS = [3, 6] if SMALL else [3, 6, 12, 24, 48]
SEEDS = 1 if SMALL else 3
rows = []
for norm in ("pre-norm", "post-norm"):
    for depth in DEPTHS:
        result = run(load_config(norm, [f"model.depth={depth}", f"seeds={SEEDS}"]))
        p = result.params
        last = p[(p["layer"] == depth - 1) & (p["param"] == "ffn.out.weight")]
        rows.append(dict(norm=norm, depth=depth, grad_norm=float(np.median(last["grad_norm"]))))
table = pd.DataFrame(rows).pivot(index="depth", columns="norm", values="grad_norm")
print(f"median over {SEEDS} seeds of ||dloss/d ffn.out.weight|| in the last block")
print(table.to_string(float_format=lambda v: f"{v:.1f}"))
for norm in table.columns:
    slope = np.polyfit(np.log(table.index), np.log(table[norm]), 1)[0]
    print(f"{norm}: log-log slope {slope:+.3f}")
