"""Terminal output of `resflow demo`: the demos' numbers (computed by resflow.demo) as Rich tables and sentences."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from resflow.report.terminal.run import fmt


def print_chain(console, demo) -> None:
    """`demo`: a resflow.demo.ChainDemo."""
    table = Table(title="chain: a linear chain of width-1 layers, every weight w, no bias, float64", title_justify="left")
    for col in ("w", "depth", "measured ∂out/∂in", "closed form w^depth", "relative error", "written out"):
        table.add_column(col, justify="right")
    for r, written in zip(demo.results, demo.written):
        table.add_row(f"{r.weight:g}", str(r.depth), repr(r.measured), repr(r.exact), f"{r.rel_error:.1e}", written)
    console.print(table)
    r09, r05 = demo.results
    console.print(
        f"0.9^50 = {r09.exact:.4f}: {1 - r09.exact:.1%} of the gradient is lost over 50 layers "
        "that each keep 90% of it (the seed's '0.005, 99.5% lost' is right).",
        markup=False,
    )
    text = demo.seeds_text
    console.print(
        f"0.5^99 = {r05.exact:.4e}: {demo.zeros} zeros after the point; "
        f"the seed document prints {text} ({demo.seeds_zeros} zeros, i.e. {float(text):.1e}), "
        f"{r05.exact / float(text):.1f}× too small.",
        markup=False,
    )


def print_tanh50(console, stats: pd.DataFrame, conclusion: list[str], seeds: int, out: Path) -> None:
    """`stats`, `conclusion`: resflow.demo.tanh50_stats and tanh50_conclusion of the demo's table."""
    table = Table(
        title=f"tanh50: one nn.Linear(1,1) shared by 50 layers, x = 1.0, float64, {seeds} seeds: |∂out/∂x|",
        title_justify="left",
    )
    for col in ("variant", "min", "5%", "25%", "median", "75%", "95%", "max", "< 1e-6", "> 1e3"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for _, r in stats.iterrows():
        table.add_row(
            r["variant"],
            *(fmt(float(r[k])) for k in ("min", "q05", "q25", "median", "q75", "q95", "max")),
            f"{r['frac_below_1e_6']:.1%}",
            f"{r['frac_above_1e3']:.1%}",
        )
    console.print(table)
    for line in conclusion:
        console.print("• " + line, markup=False)
    console.print(f"wrote {out / 'demo.csv'} (seed, weight, bias, grad_plain, grad_residual)", markup=False)
