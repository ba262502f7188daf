"""The recorder's numbers against torch.autograd.grad on the same model (an independent path)."""

import itertools
import math

import pytest
import torch

from resflow.config.loading import load_config
from resflow.experiment import measure_seed, run
from resflow.measure.data import data_generator, make_input, make_loss
from resflow.measure.device import input_shape
from resflow.models import build_model


def small(**model):
    base = dict(depth=5, width=6, activation="tanh")
    base.update(model)
    return load_config(dict(name="t", dtype="float64", seeds=1, data=dict(batch_size=3), model=base))


def reference(cfg, seed=0):
    """Block inputs and per-block gradients by autograd.grad, without any hook."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(seed)
    x = make_input(cfg.data, input_shape(cfg), gen).requires_grad_(True)
    loss_fn = make_loss(cfg.loss, tuple(x.shape), gen, "cpu", torch.float64)
    inputs, h = [], x
    for block in model.blocks:
        inputs.append(h)
        h = block(h)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(h), inputs + params, allow_unused=True)
    g_in, g_par = grads[: len(inputs)], grads[len(inputs) :]
    by_param = {id(p): (g if g is not None else torch.zeros_like(p)) for p, g in zip(params, g_par)}
    block_param_norms = [
        math.sqrt(sum(by_param[id(p)].pow(2).sum().item() for p in block.parameters())) for block in model.blocks
    ]
    return {
        "input_grad_norm": [g.norm().item() for g in g_in],
        "activation_rms": [h.pow(2).mean().sqrt().item() for h in inputs],
        "param_grad_norm": block_param_norms,
    }


COMBOS = list(itertools.product([False, True], ["none", "pre", "post"], ["layernorm", "rmsnorm"], [False, True]))


@pytest.mark.parametrize(
    "residual,norm,norm_type,preactivation",
    COMBOS,
    ids=[f"res={r}-norm={n}-{t}-preact={p}" for r, n, t, p in COMBOS],
)
def test_recorder_matches_autograd(residual, norm, norm_type, preactivation):
    cfg = small(
        residual=residual,
        norm=norm,
        norm_type=norm_type,
        preactivation=preactivation,
        residual_scale=0.7,
        init=dict(scheme="normal", scale=1.3, bias_std=0.1),
    )
    rec = measure_seed(cfg, 0, torch.device("cpu"))
    ref = reference(cfg)
    for key in ("input_grad_norm", "activation_rms", "param_grad_norm"):
        assert getattr(rec, key) == pytest.approx(ref[key], rel=1e-12, abs=0), key
    assert rec.layer == list(range(5))
    assert set(rec.sublayer) == {"mlp"}


@pytest.mark.parametrize("loss", ["sum", "mean", "mse", "random"])
def test_losses_match_autograd(loss):
    cfg = small(residual=True).replace({"loss": loss})
    rec = measure_seed(cfg, 3, torch.device("cpu"))
    ref = reference(cfg, seed=3)
    assert rec.input_grad_norm == pytest.approx(ref["input_grad_norm"], rel=1e-12)


def test_shared_weights_report_total_gradient():
    cfg = small(share_weights=True, residual=True)
    rec = measure_seed(cfg, 0, torch.device("cpu"))
    ref = reference(cfg)
    assert rec.input_grad_norm == pytest.approx(ref["input_grad_norm"], rel=1e-12)
    # one shared block: its total gradient is reported at every layer
    assert rec.param_grad_norm == pytest.approx(ref["param_grad_norm"], rel=1e-12)
    assert len(set(rec.param_grad_norm)) == 1
    torch.manual_seed(0)
    model = build_model(cfg.model, dtype=torch.float64)
    assert len(list(model.parameters())) == 2  # linear.weight, linear.bias: one copy


def test_params_rows_match_autograd():
    cfg = small(norm="pre", residual=True)
    rec = measure_seed(cfg, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(0)
    x = make_input(cfg.data, input_shape(cfg), gen).requires_grad_(True)
    loss = make_loss(cfg.loss, tuple(x.shape), gen, "cpu", torch.float64)(model(x))
    names = [(l, n) for l, b in enumerate(model.blocks) for n, _ in b.named_parameters()]
    params = [p for b in model.blocks for p in b.parameters()]
    grads = torch.autograd.grad(loss, params)
    assert len(rec.param_name) == len(names) == 4 * 5
    assert rec.param_name[:4] == ["linear.weight", "linear.bias", "norm.weight", "norm.bias"]
    assert rec.param_layer == [l for l, _ in names]
    assert rec.param_grad == pytest.approx([g.norm().item() for g in grads], rel=1e-12)
    assert rec.param_value == pytest.approx([p.norm().item() for p in params], rel=1e-12)


def test_float32_matches_autograd():
    cfg = small(residual=True, norm="post").replace({"dtype": "float32", "loss": "sum"})  # the reference below is h.sum()
    rec = measure_seed(cfg, 1, torch.device("cpu"))
    torch.manual_seed(1)
    model = build_model(cfg.model, dtype=torch.float32)
    gen = data_generator(1)
    x = make_input(cfg.data, input_shape(cfg), gen).float().requires_grad_(True)
    inputs, h = [], x
    for block in model.blocks:
        inputs.append(h)
        h = block(h)
    g = torch.autograd.grad(h.sum(), inputs)
    assert rec.input_grad_norm == pytest.approx([t.norm().item() for t in g], rel=1e-6)


def test_non_finite_gradients_are_recorded_not_raised():
    # constant weights 1e30 in float32 overflow to inf in the forward pass
    cfg = small(activation="identity", init=dict(scheme="constant", scale=1e30)).replace({"dtype": "float32"})
    result = run(cfg)
    assert not result.summary["finite"].iloc[0]
    values = result.grads[["input_grad_norm", "activation_rms"]].to_numpy()
    assert not torch.isfinite(torch.tensor(values)).all()


def test_seeds_differ_and_repeat():
    cfg = small().replace({"seeds": 3})
    a, b = run(cfg), run(cfg)
    assert a.grads.equals(b.grads)
    per_seed = a.grads.groupby("seed")["input_grad_norm"].first()
    assert per_seed.nunique() == 3
    assert list(a.summary["seed"]) == [0, 1, 2]


def test_rng_state_of_caller_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(small())
    assert torch.equal(torch.rand(3), expected)
