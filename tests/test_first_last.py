"""The first/last ratio compares block inputs at both ends: for a transformer, layer 0's `attn` row
over the last layer's `attn` row (not its `ffn` row); for one site per layer, the first and last rows.
The summary, the headline, the run table's flags, the profile figure, the sweep table and the live
training view all give that one number; each is checked here against the grads rows, picked by hand."""

import math
import re

import numpy as np
import pytest

from resflow import load_config, run
from resflow.report.figures.plots import profile_figure
from resflow.report.terminal.run import fmt, headline, run_table
from resflow.report.terminal.sweep import point_stats

TINY_TRANSFORMER = ["model.depth=3", "model.width=8", "model.heads=2", "data.batch_size=2", "data.seq_len=4", "seeds=3"]


def by_hand(grads, last_sublayer: str) -> np.ndarray:
    """Each seed's ratio: layer 0's first row over the last layer's `last_sublayer` row."""
    depth = int(grads["layer"].max()) + 1
    out = []
    for _, g in grads.groupby("seed", sort=False):
        first = g[g["layer"] == 0]["input_grad_norm"].iloc[0]
        last = g[(g["layer"] == depth - 1) & (g["sublayer"] == last_sublayer)]["input_grad_norm"].iloc[0]
        out.append(first / last)
    return np.asarray(out)


@pytest.fixture(scope="module")
def transformer():
    return run(load_config("post-norm", TINY_TRANSFORMER))


def test_transformer_summary_compares_the_attn_rows_at_both_ends(transformer):
    grads, summary = transformer.grads, transformer.summary
    assert set(grads["sublayer"]) == {"attn", "ffn"}
    want = by_hand(grads, "attn")
    assert summary["grad_ratio"].to_numpy() == pytest.approx(want, rel=1e-15)
    old = by_hand(grads, "ffn")  # the old definition (layer 0 attn over the last ffn row) differs
    assert not np.allclose(want, old, rtol=1e-6)
    depth = int(grads["layer"].max()) + 1
    last_attn = grads[(grads["layer"] == depth - 1) & (grads["sublayer"] == "attn")]["input_grad_norm"].to_numpy()
    assert summary["grad_last"].to_numpy() == pytest.approx(last_attn, rel=1e-15)


def test_headline_flags_and_figure_give_the_summary_number(transformer):
    grads, summary = transformer.grads, transformer.summary
    median = float(np.median(by_hand(grads, "attn")))
    depth = int(grads["layer"].max()) + 1
    text = headline(grads)
    assert f"layer 0 (attn) receives {fmt(median)} × the gradient of layer {depth - 1} (attn)" in text, text
    fig = profile_figure(grads)
    label = fig.axes[0].get_legend_handles_labels()[1][0]
    assert f"(first/last {median:.3g})" in label
    stats = point_stats(summary, [])
    assert float(stats["ratio"].iloc[0]) == pytest.approx(median, rel=1e-12)
    # the run table's flags compare each site with the last block's input: that row reads 1x, no flag
    table = run_table(grads)
    cells = {c.header: list(c.cells) for c in table.columns}
    rows = [
        i for i, (layer, sub) in enumerate(zip(cells["layer"], cells["sublayer"])) if layer == str(depth - 1) and sub == "attn"
    ]
    assert rows and str(cells["flag"][rows[0]]) == ""


def test_one_site_per_layer_is_first_and_last_rows():
    result = run(load_config("deep50", ["model.depth=4", "model.width=8", "data.batch_size=2", "seeds=2"]))
    g = result.grads
    for seed, rows in g.groupby("seed"):
        v = rows["input_grad_norm"].to_numpy()
        got = float(result.summary[result.summary["seed"] == seed]["grad_ratio"].iloc[0])
        assert got == v[0] / v[-1]
    from resflow.results.stats import end_sites

    assert end_sites([0, 1, 2, 3]) == (0, 3)
    assert end_sites([0, 0, 1, 1, 2, 2]) == (0, 4)


def test_the_training_view_shows_the_same_ends():
    from resflow.train.loop import train

    cfg = load_config(
        "train-postln", [*TINY_TRANSFORMER[:-1], "seeds=1", "train.steps=1", "train.record_every=1", "train.warmup=0"]
    )
    seen = []
    result = train(cfg, on_step=lambda info: seen.append(info) if info.grad_first is not None else None)
    g = result.grads[result.grads["step"] == seen[-1].step]
    depth = cfg.model.depth
    last_attn = g[(g["layer"] == depth - 1) & (g["sublayer"] == "attn")]["input_grad_norm"].iloc[0]
    assert math.isclose(seen[-1].grad_last, last_attn, rel_tol=1e-12)
    assert math.isclose(seen[-1].grad_first, g["input_grad_norm"].iloc[0], rel_tol=1e-12)
    s = result.summary[result.summary["step"] == seen[-1].step]
    assert float(s["grad_ratio"].iloc[0]) == pytest.approx(seen[-1].grad_first / seen[-1].grad_last, rel=1e-12)


def test_docs_state_the_definition():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "transformers.md").read_text()
    section = text[text.index("## The first/last ratio") :]
    assert re.search(r"block inputs at both ends.*layer 0's\s+`attn` row.*last layer's `attn` row", section, re.S)
