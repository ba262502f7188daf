"""One seed statistic (resflow.results.stats.finite_stats) behind the run table, the headline, the
profile figure and the sweep table: with a non-finite seed they show the same median, min and max,
each checked against numpy on the finite values by hand."""

import math

import numpy as np
import pandas as pd
from rich.console import Console

from resflow.report.figures.plots import profile_figure
from resflow.report.terminal.run import fmt, headline, run_table
from resflow.results.stats import finite_stats, site_stats


def grads_with_a_bad_seed() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for layer in range(3):
            value = float(rng.uniform(0.5, 2.0)) * 10.0**-layer
            if seed == 2 and layer == 1:
                value = math.inf  # one seed blew up at one layer
            if seed == 3 and layer == 1:
                value = math.nan
            rows.append(dict(variant="v", seed=seed, step=0, layer=layer, sublayer="mlp", input_grad_norm=value))
    return pd.DataFrame(rows)


def by_hand(grads: pd.DataFrame, layer: int) -> tuple[float, float, float]:
    v = grads.loc[grads["layer"] == layer, "input_grad_norm"].to_numpy()
    v = v[np.isfinite(v)]
    return float(np.median(v)), float(v.min()), float(v.max())


def test_finite_stats_leaves_out_and_counts_non_finite_values():
    assert finite_stats([1.0, math.inf, 3.0, math.nan, 2.0]) == (2.0, 1.0, 3.0, 2)
    med, lo, hi, bad = finite_stats([math.nan, math.inf])
    assert math.isnan(med) and math.isnan(lo) and math.isnan(hi) and bad == 2


def test_table_figure_and_stats_agree_with_a_non_finite_seed():
    grads = grads_with_a_bad_seed()
    stats = site_stats(grads)
    line = next(l for l in profile_figure(grads).axes[0].get_lines() if l.get_gid() == "median:v")
    console = Console(width=200, record=True)
    console.print(run_table(grads))
    text = console.export_text()
    for layer in range(3):
        med, lo, hi = by_hand(grads, layer)
        row = stats[stats["layer"] == layer].iloc[0]
        assert (row["median"], row["min"], row["max"]) == (med, lo, hi)
        assert line.get_ydata()[layer] == med  # the figure's line
        assert fmt(med) in text and f"{fmt(lo)} – {fmt(hi)}" in text  # the table's cells
    assert int(stats.loc[stats["layer"] == 1, "n_bad"].iloc[0]) == 2
    assert "2 of 4 non-finite" in text


def test_headline_says_how_many_seeds_its_median_leaves_out():
    grads = grads_with_a_bad_seed()
    bad_first = grads.copy()
    bad_first.loc[(bad_first["seed"] == 0) & (bad_first["layer"] == 0), "input_grad_norm"] = math.inf
    assert "median over 3 of 4 seeds: 1 non-finite" in headline(bad_first)
    assert "median over 4 seeds" in headline(grads)
