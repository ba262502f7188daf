"""update_ratio (resflow/quantities/update_ratio.py): ||theta_{s+1} - theta_s|| / ||theta_s|| per
parameter and per block, in training runs and in watch (opt-in), against torch norms of the
parameters before and after a real optimizer step."""

import io
import math

import pytest
import torch
from tinymodels import Tiny

import resflow
from resflow.config.loading import load_config
from resflow.errors import ConfigError
from resflow.experiment import run

NAME = "update_ratio"


def loop(quantities=(), steps=4, every=2, lrs=(1e-2, 1e-2, 1e-2, 1e-2), optimizer=torch.optim.Adam):
    """A user's training loop under watch: (watch, {step: [(before, after) per block's weight and bias]})."""
    torch.manual_seed(0)
    model = Tiny(width=6, depth=3)
    groups = [{"params": b.parameters(), "lr": lr} for b, lr in zip(model.blocks, lrs)]
    groups.append({"params": model.head.parameters(), "lr": lrs[-1]})
    opt = optimizer(groups)
    x, y = torch.randn(8, 6), torch.randn(8, 2)
    snaps = {}
    with resflow.watch(model, every=every, quantities=quantities) as w:
        for step in range(steps):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            w.step(loss)
            before = [[p.detach().clone() for p in b.parameters()] for b in model.blocks]
            opt.step()
            snaps[step] = [(bs, [p.detach().clone() for p in b.parameters()]) for bs, b in zip(before, model.blocks)]
    return w, snaps


def test_watch_per_parameter_and_per_block_equal_torch_norms_across_opt_step():
    w, snaps = loop(quantities=[NAME])
    g, p = w.grads, w.params
    assert sorted(g["step"].unique()) == [0, 2]
    for step in (0, 2):
        for layer, (before, after) in enumerate(snaps[step]):
            want_block = torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(after, before))) / torch.sqrt(
                sum(b.pow(2).sum() for b in before)
            )
            got = g[(g["step"] == step) & (g["layer"] == layer)][NAME].item()
            assert got == pytest.approx(want_block.item(), rel=1e-5)
            for name, b, a in zip(("lin.weight", "lin.bias"), before, after):
                row = p[(p["step"] == step) & (p["layer"] == layer) & (p["param"] == name)]
                assert row[NAME].item() == pytest.approx(((a - b).norm() / b.norm()).item(), rel=1e-5)


def test_watch_without_the_opt_in_measures_no_copy_and_no_column():
    w, _ = loop()
    assert NAME not in w.grads.columns and NAME not in w.params.columns


def test_watch_opt_in_is_checked():
    with pytest.raises(ConfigError, match="not an opt-in quantity"):
        resflow.watch(Tiny(), quantities=["input_grad_norm"])
    with pytest.raises(ConfigError, match="a list of quantity names"):
        resflow.watch(Tiny(), quantities=NAME)


def test_no_optimizer_step_reads_nan():
    torch.manual_seed(0)
    model = Tiny()
    with resflow.watch(model, quantities=[NAME]) as w:
        ((model(torch.randn(4, 6))) ** 2).mean().backward()
        w.step()
    assert w.grads[NAME].isna().all() and w.params[NAME].isna().all()


def test_training_run_per_block_combines_the_per_parameter_values():
    """grads.csv's per-block value against params.csv: sqrt(sum (ratio_p ||theta_p||)^2) / sqrt(sum ||theta_p||^2)."""
    cfg = load_config(
        dict(name="t", dtype="float64", seeds=1, data=dict(batch_size=8), model=dict(depth=4, width=8), train=dict(steps=4))
    )
    r = run(cfg)
    p = r.params.assign(d2=(r.params[NAME] * r.params["value_norm"]) ** 2, v2=r.params["value_norm"] ** 2)
    per = p.groupby(["step", "layer"])[["d2", "v2"]].sum()
    g = r.grads.join((per["d2"] ** 0.5 / per["v2"] ** 0.5).rename("want"), on=["step", "layer"])
    last = g["step"] == g["step"].max()
    assert g[last][NAME].isna().all()  # no update follows the last step
    assert g[~last][NAME].to_numpy() == pytest.approx(g[~last]["want"].to_numpy(), rel=1e-9)


def test_the_training_table_flags_a_frozen_and_a_lurching_layer():
    """~1e-3 per step is the rule of thumb: a 1e-6 layer and a 1e-1 layer stand out."""
    from rich.console import Console

    from resflow.report.terminal.train import train_table

    w, _ = loop(quantities=[NAME, "movement"], lrs=(1e-9, 1e-3, 10.0, 1e-3), optimizer=torch.optim.SGD)
    g = w.grads[w.grads["step"] == 0].set_index("layer")[NAME]
    assert g[0] < 1e-5 and g[2] > 3e-2 and 1e-5 < g[1] < 3e-2
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(train_table(w.result()))
    text = console.export_text()
    rows = {
        int(line.split("│")[1]): line
        for line in text.splitlines()
        if line.startswith("│") and line.split("│")[1].strip().isdigit()
    }
    assert "low" in rows[0] and "high" in rows[2] and "low" not in rows[1] and "high" not in rows[1]
    assert not math.isnan(w.params["movement"].iloc[0])
