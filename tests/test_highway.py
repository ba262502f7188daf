"""The highway block (model.block: highway) against a hand-written formula and against autograd."""

import math

import pytest
import torch

from resflow.config.loading import load_config
from resflow.errors import ConfigError
from resflow.experiment import measure_seed
from resflow.measure.data import data_generator, make_input, make_loss
from resflow.measure.device import input_shape
from resflow.models import build_model


def highway(**model):
    base = dict(block="highway", depth=6, width=5)
    base.update(model)
    return load_config(dict(name="hw", dtype="float64", seeds=1, data=dict(batch_size=4), model=base))


def test_output_is_the_papers_formula():
    """y = T·H + (1 − T)·x with T = σ(W_T x + b_T), H = tanh(W_H x + b_H), block after block."""
    cfg = highway(gate_bias=-1.5, init=dict(scheme="normal", scale=1.2, bias_std=0.3))
    torch.manual_seed(0)
    model = build_model(cfg.model, dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)
    y = x
    for block in model.blocks:
        W_H, b_H = block.linear.weight, block.linear.bias
        W_T, b_T = block.gate.weight, block.gate.bias
        assert torch.equal(b_T, torch.full((5,), -1.5, dtype=torch.float64))  # the gate bias at init
        T = 1 / (1 + torch.exp(-(y @ W_T.T + b_T)))
        H = torch.tanh(y @ W_H.T + b_H)
        y = T * H + (1 - T) * y
    assert torch.allclose(model(x), y, rtol=1e-13, atol=0)


def test_negative_gate_bias_carries_the_input():
    """A very negative b_T closes the gate: every block passes x through (T ≈ 0)."""
    cfg = highway(gate_bias=-40.0)
    torch.manual_seed(1)
    model = build_model(cfg.model, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(model(x), x, atol=1e-12)


@pytest.mark.parametrize("share", [False, True], ids=["own-weights", "shared"])
def test_recorded_gradients_match_retain_grad(share):
    """Per-block ‖∂loss/∂x_l‖ and ‖∂loss/∂θ_l‖ as recorded, against retain_grad on the block inputs of
    the same model, input and loss (built here, without resflow's hooks)."""
    cfg = highway(share_weights=share, bias=not share, init=dict(scheme="normal", scale=1.1, bias_std=0.2))
    rec = measure_seed(cfg, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(0)
    x = make_input(cfg.data, input_shape(cfg), gen)
    loss_fn = make_loss(cfg.loss, tuple(x.shape), gen, "cpu", torch.float64)
    inputs, h = [], x.requires_grad_(True)
    for block in model.blocks:
        h.retain_grad()
        inputs.append(h)
        h = block(h)
    loss_fn(h).backward()
    assert rec.input_grad_norm == pytest.approx([v.grad.norm().item() for v in inputs], rel=1e-12, abs=0)
    if not share:  # (a shared block's parameters hold the sum over depths)
        per_block = [math.sqrt(sum(p.grad.pow(2).sum().item() for p in b.parameters())) for b in model.blocks]
        assert rec.param_grad_norm == pytest.approx(per_block, rel=1e-12, abs=0)
    assert rec.layer == list(range(6))


@pytest.mark.parametrize("key", ["residual=true", "norm=pre", "preactivation=true", "heads=2", "shortcut=pad"])
def test_keys_of_other_families_are_refused_by_name(key):
    with pytest.raises(ConfigError) as err:
        highway().replace([f"model.{key}"])
    name = key.split("=")[0]
    assert str(err.value).startswith(f"--set model.{name}: not a key of block 'highway' (its keys: block, depth, width")
    assert "\n" not in str(err.value)


def test_the_memory_estimate_counts_both_layers():
    from resflow.config.memory import estimate

    est = estimate(highway(width=7, depth=3))
    torch.manual_seed(0)
    n = sum(p.numel() for p in build_model(highway(width=7, depth=3).model).parameters())
    assert est.params == 2 * n * 8  # weights and gradients, float64


def test_theory_and_title_describe_a_highway_network():
    """Its own words: not "no residual, no norm" (keys it does not have), not a transformer, and no
    prediction said plainly (the mean-field recursions cover MLP stacks only)."""
    from resflow.report.terminal.run import run_title
    from resflow.theory.text import describe

    cfg = load_config(dict(name="highway50", loss="sum", seeds=5, model=dict(block="highway", depth=50, width=64)))
    lines = describe(cfg)
    assert lines[0] == "highway50: depth 50, width 64, highway, tanh, gate bias -2, loss sum"
    assert lines[1].startswith("no prediction: resflow has no prediction for highway networks")
    title = run_title(cfg)
    assert title.startswith("highway50: 50 × highway width 64, tanh, gate bias -2, init default×1")
    assert "residual" not in title and "norm" not in title and "transformer" not in " ".join(lines)
