"""Closed forms: the 0.9^L chain through the recorder, and the seeds' tanh50 demo vs per-seed autograd."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from resflow import demo
from resflow.results.stats import fitted_gain


@pytest.mark.parametrize("depth,weight", [(50, 0.9), (99, 0.5), (10, 1.7), (1, 0.3)])
def test_chain_equals_closed_form_every_layer(depth, weight):
    r = demo.chain(depth, weight)
    # closed form by repeated float multiplication, independent of the Fraction path used in demo
    expected = [math.prod([weight] * (depth - layer)) for layer in range(depth)]
    assert r.per_layer["measured"].tolist() == pytest.approx(expected, rel=1e-12)
    assert r.measured == pytest.approx(weight**depth, rel=1e-12)
    assert r.rel_error < 1e-12


def test_chain_headline_numbers():
    assert demo.chain(50, 0.9).measured == pytest.approx(0.0051537752073201, rel=1e-12)
    assert demo.chain(99, 0.5).measured == pytest.approx(2.0**-99, rel=1e-12)


def test_gain_per_layer_of_chain_is_the_weight():
    r = demo.chain(50, 0.9)
    gain = fitted_gain(r.per_layer["layer"].to_numpy(float), r.per_layer["measured"].to_numpy(float))
    assert gain == pytest.approx(0.9, rel=1e-9)


def test_decimal_expansion_of_half_pow_99():
    text = demo.decimal_expansion(0.5, 99, digits=6)
    assert text == "0." + "0" * 29 + "157772"  # 2^-99 = 1.5777218...e-30
    assert demo.leading_zeros(text) == 29
    # the seed document's number has one zero too many: it is ~10x too small
    assert demo.leading_zeros(demo.SEEDS_TEXT_0_5_POW_99) == 30
    assert float(Fraction(1, 2**99)) / float(demo.SEEDS_TEXT_0_5_POW_99) == pytest.approx(9.86, rel=1e-2)


def _seed_experiment(seed, residual, depth=50):
    """The seeds' own code, one seed at a time (its float32 layer, then the arithmetic in float64)."""
    torch.manual_seed(seed)
    layer = nn.Linear(1, 1).double()
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    current = x
    for _ in range(depth):
        current = current + torch.tanh(layer(current)) if residual else torch.tanh(layer(current))
    current.backward()
    return layer.weight.item(), layer.bias.item(), x.grad.item()


def test_tanh50_matches_the_seeds_code_per_seed():
    df = demo.tanh50(seeds=12, first_seed=5)
    for row in df.itertuples():
        w, b, g_plain = _seed_experiment(row.seed, residual=False)
        _, _, g_res = _seed_experiment(row.seed, residual=True)
        assert (row.weight, row.bias) == (w, b)
        assert row.grad_plain == pytest.approx(g_plain, rel=1e-12, abs=1e-300)
        assert row.grad_residual == pytest.approx(g_res, rel=1e-12)


def test_tanh50_seed_gives_the_weight_the_seeds_float32_code_gets():
    df = demo.tanh50(seeds=3)
    for row in df.itertuples():
        torch.manual_seed(row.seed)
        layer = nn.Linear(1, 1)  # as the seed document writes it: torch's default dtype
        assert (row.weight, row.bias) == (layer.weight.item(), layer.bias.item())


def test_tanh50_plain_gradient_is_bounded_by_weight_power():
    # |d tanh(w x + b)/dx| <= |w|, so |grad_plain| <= |w|^50: an independent bound per seed
    df = demo.tanh50(seeds=200)
    bound = np.abs(df["weight"].to_numpy()) ** 50
    assert (np.abs(df["grad_plain"].to_numpy()) <= bound * (1 + 1e-9)).all()


def test_tanh50_stats_and_conclusion_follow_the_data():
    df = demo.tanh50(seeds=300)
    stats = demo.tanh50_stats(df).set_index("variant")
    plain = np.abs(df["grad_plain"].to_numpy())
    assert stats.iloc[0]["median"] == pytest.approx(np.median(plain))
    assert stats.iloc[0]["frac_below_1e_6"] == pytest.approx((plain < 1e-6).mean())
    text = " ".join(demo.tanh50_conclusion(df))
    assert f"{(plain < 1e-6).mean():.1%}" in text
