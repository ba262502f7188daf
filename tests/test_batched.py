"""Batched seeds (resflow.measure.batched) against the sequential path (experiment.measure_seed): same
initialisation bit for bit, same numbers to rounding (float64 1e-12 relative, float32 1e-5)."""

import pytest
import torch

from resflow.config.loading import load_config
from resflow.experiment import measure_seed, run
from resflow.measure import batched
from resflow.models import build_model

CPU = torch.device("cpu")
FIELDS = ("input_grad_norm", "activation_rms", "param_grad_norm", "param_grad", "param_value")

CASES = {
    "plain-tanh": {},
    "residual-relu-nobias": {"residual": True, "activation": "relu", "bias": False},
    "pre-layernorm": {"residual": True, "norm": "pre"},
    "post-rmsnorm-preact": {"residual": True, "norm": "post", "norm_type": "rmsnorm", "preactivation": True},
    "orthogonal-gelu": {"activation": "gelu", "init": {"scheme": "orthogonal", "scale": 1.3}},
    "normal-bias-std": {"init": {"scheme": "normal", "scale": 2.0, "bias_std": 0.1}, "residual": True, "residual_scale": 0.5},
}


def _cfg(model, dtype="float64", seeds=3, loss="mse"):
    return load_config(
        {
            "dtype": dtype,
            "seeds": seeds,
            "seed": 5,
            "loss": loss,
            "device": "cpu",
            "model": {"depth": 5, "width": 8, **model},
            "data": {"batch_size": 4},
        }
    )


def _assert_close(seq, bat, rtol):
    assert len(seq) == len(bat)
    for a, b in zip(seq, bat):
        assert (a.layer, a.sublayer, a.param_layer, a.param_name) == (b.layer, b.sublayer, b.param_layer, b.param_name)
        for f in FIELDS:
            assert getattr(b, f) == pytest.approx(getattr(a, f), rel=rtol, abs=0), f


@pytest.mark.parametrize("model", CASES.values(), ids=CASES.keys())
def test_batched_equals_sequential_float64(model):
    cfg = _cfg(model)
    seq = [measure_seed(cfg, s, CPU) for s in cfg.seed_list]
    _assert_close(seq, batched.measure_seeds(cfg, cfg.seed_list, CPU, torch.float64), 1e-12)


@pytest.mark.parametrize("loss", ["sum", "mean", "random"])
def test_batched_equals_sequential_float32_each_loss(loss):
    cfg = _cfg({"residual": True, "norm": "pre"}, dtype="float32", loss=loss)
    seq = [measure_seed(cfg, s, CPU) for s in cfg.seed_list]
    _assert_close(seq, batched.measure_seeds(cfg, cfg.seed_list, CPU, torch.float32), 1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", CASES.values(), ids=CASES.keys())
def test_initialisation_is_build_models_bit_for_bit(model, dtype):
    cfg = _cfg(model, dtype=dtype)
    stacked = batched.StackedMLP(cfg, cfg.seed_list, CPU, getattr(torch, dtype))
    for s, seed in enumerate(cfg.seed_list):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            reference = build_model(cfg.model, dtype=getattr(torch, dtype))
        for p_ref, p_tmpl in zip(reference.parameters(), stacked.template.parameters(), strict=True):
            assert torch.equal(stacked.stacked[id(p_tmpl)][s], p_ref)


def _bit_for_bit(cfg, dtype):
    stacked = batched.StackedMLP(cfg, cfg.seed_list, CPU, dtype)
    for s, seed in enumerate(cfg.seed_list):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            reference = build_model(cfg.model, dtype=dtype)
        for p_ref, p_tmpl in zip(reference.parameters(), stacked.template.parameters(), strict=True):
            assert torch.equal(stacked.stacked[id(p_tmpl)][s], p_ref)
    return stacked


@pytest.mark.parametrize(
    "init,shared",
    [
        ({"scheme": "default"}, True),
        ({"scheme": "kaiming", "distribution": "uniform", "mode": "fan_out"}, True),
        ({"scheme": "normal"}, False),  # the scale is the draws' std: no two scales share draws
    ],
    ids=["default", "kaiming", "normal"],
)
def test_points_differing_in_scale_share_draws_and_stay_bit_for_bit(monkeypatch, init, shared):
    """An init-scale sweep's points draw once per process (the memo), each still equal to build_model's
    own parameters after torch.manual_seed(seed), scale 1 included; a memo hit does not draw again."""
    draws = []
    real = batched._draw
    monkeypatch.setattr(batched, "_draw", lambda key: draws.append(key) or real(key))
    batched._memo.cache_clear()
    for scale in (0.5, 1.0, 1.3, 0.5):
        stacked = _bit_for_bit(_cfg({"residual": True, "init": {**init, "scale": scale}}, dtype="float32"), torch.float32)
        for t in stacked.stacked.values():  # the memo's values are copied: the step may change these
            t.data.add_(1.0)
    assert len(draws) == (1 if shared else 4)  # (a one-entry memo: 0.5 after 1.3 is drawn again)
    other_seeds = _cfg({"init": {**init, "scale": 1.3}}, dtype="float32", seeds=2)  # another key: drawn anew
    _bit_for_bit(other_seeds, torch.float32)
    assert len(draws) == (2 if shared else 5)


def test_no_memo_above_its_size(monkeypatch):
    monkeypatch.setattr(batched, "MEMO_BYTES", 0)
    draws = []
    real = batched._draw
    monkeypatch.setattr(batched, "_draw", lambda key: draws.append(key) or real(key))
    for scale in (0.5, 1.3):
        _bit_for_bit(_cfg({"init": {"scale": scale}}, dtype="float32"), torch.float32)
    assert len(draws) == 2


def test_run_uses_batched_path_and_matches_sequential(monkeypatch):
    cfg = _cfg({"residual": True}, seeds=4)
    fast = run(cfg)
    monkeypatch.setattr(batched, "supports", lambda cfg: False)
    slow = run(cfg)
    assert fast.grads["seed"].tolist() == slow.grads["seed"].tolist()
    for col in ("input_grad_norm", "activation_rms", "param_grad_norm"):
        assert fast.grads[col].to_numpy() == pytest.approx(slow.grads[col].to_numpy(), rel=1e-12)
    assert fast.params["value_norm"].to_numpy() == pytest.approx(slow.params["value_norm"].to_numpy(), rel=1e-12)


def test_chunks_cover_every_seed_once(monkeypatch):
    monkeypatch.setattr(batched, "ELEMENT_BUDGET", 5 * 4 * 8 * 3)  # three seeds per chunk
    cfg = _cfg({}, seeds=7)
    assert batched.chunks(cfg, cfg.seed_list) == [[5, 6, 7], [8, 9, 10], [11]]


def test_supports_only_multi_seed_unshared_mlp():
    assert batched.supports(_cfg({}, seeds=2))
    assert not batched.supports(_cfg({}, seeds=1))
    assert not batched.supports(_cfg({"share_weights": True}, seeds=2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width,bias,depth", [(8, True, 5), (3, False, 3), (3, True, 1), (1, False, 1)])
def test_constructor_draws_replayed_exactly(width, bias, depth, dtype):
    # odd and even totals; the reference is the real nn.Linear constructors' effect on torch's RNG
    torch.manual_seed(3)
    linears = [torch.nn.Linear(width, width, bias=bias, dtype=dtype) for _ in range(depth)]
    after_constructors = torch.get_rng_state()
    torch.manual_seed(3)
    batched._replay_constructor_draws(linears, CPU, dtype)
    assert torch.equal(torch.get_rng_state(), after_constructors)


def test_batched_run_leaves_the_callers_rng_untouched():
    cfg = _cfg({}, seeds=3)
    assert batched.supports(cfg)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(cfg)
    assert torch.equal(torch.rand(3), expected)
