"""The theory module against closed forms, against torch, and against wide simulations."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from resflow.config.loading import load_config
from resflow.config.schema import ACTIVATION_NAMES
from resflow.experiment import run
from resflow.models.activations import ACTIVATIONS as TORCH_ACTIVATIONS
from resflow.theory import predict as T
from resflow.theory.overlay import log_ratio_gap


def cfg(model=None, **top):
    base = dict(
        name="t",
        dtype="float64",
        loss="sum",
        seeds=1,
        model=dict(depth=10, width=256, init=dict(scheme="normal")),
        data=dict(batch_size=16),
    )
    base.update(top)
    base["model"] = {**base["model"], **(model or {})}
    return load_config(base)


# ---------------------------------------------------------------------------------------------
# Quadrature and activations


@pytest.mark.parametrize("q", [0.01, 0.5, 1.0, 7.3])
def test_identity_and_relu_closed_forms(q):
    assert T.second_moment("identity", q) == pytest.approx(q, rel=1e-12)
    assert T.chi("identity", 1.7, q) == pytest.approx(1.7, rel=1e-12)
    assert T.second_moment("relu", q) == pytest.approx(q / 2, rel=1e-12)
    for sw2 in (0.5, 2.0, 3.1):
        assert T.chi("relu", sw2, q) == pytest.approx(sw2 / 2, rel=1e-12)
    # elu'² has a kink at 0: E = 1/2 + e^{2q}·Φ(−2√q)
    exact = 0.5 + math.exp(2 * q) * 0.5 * math.erfc(2 * math.sqrt(q) / math.sqrt(2))
    assert T.deriv_moment("elu", q) == pytest.approx(exact, rel=1e-10)


def test_shifted_relu_moment():  # E[relu(μ + σz)²] = (μ² + σ²)Φ(μ/σ) + μσϕ(μ/σ)
    mu, sd = 0.7, 1.3
    t = mu / sd
    cdf, pdf = 0.5 * math.erfc(-t / math.sqrt(2)), math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    assert T.second_moment("relu", sd * sd, mu) == pytest.approx((mu * mu + sd * sd) * cdf + mu * sd * pdf, rel=1e-10)


def test_tanh_known_values():
    assert T.fixed_point("tanh", 0.5, 0.0) == 0.0
    assert T.chi1("tanh", 0.5, 0.0) == pytest.approx(0.5, rel=1e-9)
    assert T.fixed_point("tanh", 2.0, 0.0) == pytest.approx(0.61797, abs=2e-5)
    assert T.chi1("tanh", 2.0, 0.0) == pytest.approx(1.10553, abs=2e-5)
    assert T.phase(T.chi1("tanh", 0.5, 0.0)) == "ordered" and T.phase(T.chi1("tanh", 2.0, 0.0)) == "chaotic"


def test_critical_sigma_w2():
    assert T.critical_sigma_w2("relu", 0.3) == 2.0
    assert T.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    crit = T.critical_sigma_w2("tanh", 0.05)
    assert crit > 1.0 and T.chi1("tanh", crit, 0.05) == pytest.approx(1.0, abs=1e-6)
    assert T.critical_sigma_w2("gelu", 0.0) is None


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_formulas_match_torch(name):
    assert set(T.ACTIVATIONS) == set(ACTIVATION_NAMES)
    x = torch.linspace(-25, 25, 2001, dtype=torch.float64)
    x = x[x.abs() > 1e-9].requires_grad_(True)  # skip the kink itself
    y = TORCH_ACTIVATIONS[name](x)
    (g,) = torch.autograd.grad(y.sum(), x)
    xn = x.detach().numpy()
    np.testing.assert_allclose(T.ACTIVATIONS[name].phi(xn), y.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(T.ACTIVATIONS[name].dphi(xn), g.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "scheme,scale,expected",
    [
        ("normal", 1.3, 1.69),
        ("xavier", 1.3, 1.69),
        ("kaiming", 1.3, 3.38),
        ("default", 1.3, 1.69 / 3),
    ],
)
def test_weight_variance_matches_the_built_layers(scheme, scale, expected):
    c = cfg(model=dict(depth=2, width=400, init=dict(scheme=scheme, scale=scale)))
    assert T.weight_variance(c.model.init) == pytest.approx(expected)
    from resflow.models import build_model

    torch.manual_seed(0)
    w = build_model(c.model, dtype=torch.float64).blocks[0].linear.weight
    assert float(w.detach().var()) * 400 == pytest.approx(expected, rel=0.02)


def test_default_bias_variance_matches_pytorch():
    c = cfg(model=dict(depth=2, width=400, init=dict(scheme="default")))
    from resflow.models import build_model

    torch.manual_seed(0)
    b = torch.cat([blk.linear.bias for blk in build_model(c.model, dtype=torch.float64).blocks])
    assert T.bias_variance(c.model) == pytest.approx(1 / 1200)
    assert float(b.detach().var()) == pytest.approx(1 / 1200, rel=0.15)


# ---------------------------------------------------------------------------------------------
# Measured vs predicted


def measured_log_ratios(c):
    g = run(c).grads
    logs = [np.log(grp["input_grad_norm"].to_numpy() / grp["input_grad_norm"].to_numpy()[-1]) for _, grp in g.groupby("seed")]
    return np.mean(logs, axis=0)


@pytest.mark.parametrize(
    "model,top,tol",
    [
        (dict(activation="tanh", init=dict(scheme="normal", scale=0.8, bias_std=0.3)), {}, 0.03),  # ordered
        (dict(activation="tanh", init=dict(scheme="normal", scale=1.6)), {}, 0.05),  # chaotic
        (dict(activation="relu", init=dict(scheme="normal", scale=1.2)), dict(loss="random"), 0.05),
        (dict(activation="relu", residual=True, preactivation=True), {}, 0.05),
        (dict(activation="tanh", residual=True, preactivation=True, norm="pre"), {}, 0.05),
    ],
    ids=["tanh-ordered", "tanh-chaotic", "relu-random-loss", "residual-relu-preact", "prenorm-tanh"],
)
def test_measured_matches_prediction_on_wide_stacks(model, top, tol):
    c = cfg(model=dict(depth=12, width=384, **model), seeds=3, **top)
    pred = T.predict(c)
    assert pred, getattr(pred, "reason", "")
    meas = measured_log_ratios(c)
    predicted = np.log(pred.ratios)
    assert abs(predicted[0]) > 0.3  # the ratio is far from 1, so the tolerance means something
    assert abs(meas[0] - predicted[0]) <= tol * abs(predicted[0])


def test_exact_identity_residual_and_constant_chain():
    c = cfg(model=dict(depth=8, width=16, residual=True, residual_scale=0.0, activation="relu"))
    g = run(c).grads["input_grad_norm"].to_numpy()
    np.testing.assert_allclose(g / g[-1], T.predict(c).ratios, rtol=1e-12)
    c = cfg(model=dict(depth=6, width=3, activation="identity", init=dict(scheme="constant", scale=0.4)), loss="random")
    g = run(c).grads["input_grad_norm"].to_numpy()
    np.testing.assert_allclose(g / g[-1], 1.2 ** np.arange(5, -1, -1), rtol=1e-12)
    np.testing.assert_allclose(T.predict(c).ratios, 1.2 ** np.arange(5, -1, -1), rtol=1e-12)


@pytest.mark.parametrize(
    "model,top,words",
    [
        (dict(residual=True), {}, "post-activation residual"),
        (dict(residual=True, preactivation=True, norm="post"), {}, "post-norm"),
        (dict(share_weights=True), {}, "shared weights"),
        (dict(activation="relu"), {}, "loss 'sum'"),
        (dict(activation="softplus"), dict(loss="random"), "softplus"),
        (dict(init=dict(scheme="constant", scale=0.1)), {}, "not Gaussian"),
        (dict(), dict(loss="mse"), "mse"),
        (dict(residual=True, preactivation=True, norm="pre"), dict(data=dict(input="ones")), "constant input"),
    ],
)
def test_out_of_domain_gives_no_prediction(model, top, words):
    pred = T.predict(cfg(model=model, **top))
    assert isinstance(pred, T.NoPrediction) and words in pred.reason


def test_post_activation_residual_really_disagrees_with_the_naive_recursion():
    """Why it is out of the domain: x + relu(W x) measured vs the pre-activation-style recursion."""
    c = cfg(model=dict(depth=12, width=384, activation="relu", residual=True), seeds=2)
    naive = 11 * 0.5 * math.log(1 + 1.0 / 2)  # ln Π √(1 + σ_w²·E[φ'²]) with σ_w² = 1
    assert measured_log_ratios(c)[0] > 1.3 * naive


# ---------------------------------------------------------------------------------------------
# Overlay columns and the CLI


def test_run_adds_predicted_columns():
    c = cfg(model=dict(depth=6, width=64), seeds=2)
    r = run(c)
    for col in ("predicted_grad_ratio", "predicted_gain_per_layer", "chi1", "depth_scale"):
        assert r.summary[col].notna().all()
    for _, grp in r.grads.groupby("seed"):
        assert grp["predicted_input_grad_norm"].iloc[-1] == grp["input_grad_norm"].iloc[-1]
    assert r.summary["predicted_grad_ratio"].iloc[0] == pytest.approx(T.predict(c).grad_ratio)
    r = run(cfg(model=dict(depth=4, width=8, residual=True)))
    assert r.summary["predicted_grad_ratio"].isna().all() and r.grads["predicted_input_grad_norm"].isna().all()
    assert r.meta["theory"].startswith("no prediction")


def test_log_ratio_gap():
    assert log_ratio_gap(math.exp(-2.2), math.exp(-2.0)) == pytest.approx(-0.2)
    assert math.isnan(log_ratio_gap(0.0, 0.5))
    assert log_ratio_gap(0.98, 1.001) == pytest.approx(math.log(0.98 / 1.001))  # defined at the critical point


def test_theory_command_prints_without_importing_torch(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from resflow.cli.app import app; "
        "r = CliRunner().invoke(app, ['theory', 'deep50', '--set', 'model.init.scheme=normal', "
        "'--set', 'model.init.scale=1.4142135623730951', '--set', 'model.bias=false']); "
        "print(r.output); print('torch' in sys.modules); sys.exit(r.exit_code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import re

    assert float(re.search(r"q\* = ([0-9.]+)", out.stdout).group(1)) == pytest.approx(0.61797, abs=2e-5)
    assert "χ₁ = 1.1055" in out.stdout and "phase: chaotic" in out.stdout
    assert "critical σ_w² at σ_b² = 0: 1" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_theory_command_bad_key_is_one_line_error():
    from typer.testing import CliRunner

    from resflow.cli.app import app

    r = CliRunner().invoke(app, ["theory", "deep50", "--set", "model.depht=3"])
    assert r.exit_code == 2 and "model.depht" in r.output and "Traceback" not in r.output


def test_overlay_only_at_initialisation():
    import pandas as pd

    from resflow.theory.overlay import add_prediction

    pred = T.predict(cfg(model=dict(depth=3, width=64)))
    grads = pd.DataFrame(
        dict(variant="v", seed=0, step=[0, 0, 0, 5, 5, 5], layer=[0, 1, 2] * 2, input_grad_norm=[0.1, 0.5, 2.0, 1.0, 1.0, 1.0])
    )
    summary = pd.DataFrame(dict(variant="v", seed=0, step=[0, 5], grad_ratio=[0.05, 1.0]))
    g, s = add_prediction(grads, summary, pred)
    np.testing.assert_allclose(g["predicted_input_grad_norm"][:3], 2.0 * pred.ratios)
    assert g["predicted_input_grad_norm"][3:].isna().all() and np.isnan(s["predicted_grad_ratio"].iloc[1])
    assert s["predicted_grad_ratio"].iloc[0] == pytest.approx(pred.grad_ratio)


def test_overlay_groups_match_a_loop_over_groups():
    """The vectorised overlay against a plain loop over (variant, seed, step) groups: groups
    interleaved, one with a site too many (no prediction), a step after 0 (none), two variants."""
    import pandas as pd

    from resflow.theory.overlay import add_prediction

    pred = T.predict(cfg(model=dict(depth=3, width=64)))
    rng = np.random.default_rng(0)
    rows = [("a", 0, 0, l) for l in range(3)] + [("b", 0, 0, l) for l in range(3)] + [("a", 1, 0, l) for l in range(4)]
    rows += [("a", 2, 7, l) for l in range(3)]
    order = rng.permutation(len(rows))
    grads = pd.DataFrame([rows[i] for i in order], columns=["variant", "seed", "step", "layer"])
    grads = grads.sort_values(["layer"], kind="stable").reset_index(drop=True)  # groups interleaved
    grads["input_grad_norm"] = rng.random(len(grads))
    summary = pd.DataFrame(dict(variant="a", seed=0, step=[0], grad_ratio=[0.1]))
    got = add_prediction(grads, summary, pred)[0]["predicted_input_grad_norm"].to_numpy()
    expected = np.full(len(grads), np.nan)
    for (_, _, step), part in grads.groupby(["variant", "seed", "step"]):
        if step == 0 and len(part) == len(pred.ratios):
            expected[part.index.to_numpy()] = part["input_grad_norm"].iloc[-1] * pred.ratios
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).sum() == 6


def test_a_prediction_deep_enough_to_underflow_stays_in_log_space():
    """depth 2000 of tanh: the predicted ratio underflows float64 (0.0), but ln(ratio) and the
    fitted gain do not, and no numpy warning leaks to the user's terminal."""
    import warnings

    from resflow.config.schema import validate
    from resflow.theory.predict import predict

    cfg = validate({"model": {"depth": 2000, "width": 64}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = predict(cfg)
        logs = p.log_ratios
        gain = p.gain_per_layer
    assert p.grad_ratio == 0.0  # exp(ln) underflows, as expected at this depth
    assert np.isfinite(logs).all() and logs[-1] == 0.0
    # in log space the per-layer factors are summed exactly: ln(ratio_0) = Σ ½ ln(factor)
    assert logs[0] == pytest.approx(0.5 * np.log(np.asarray(p.factors)).sum(), rel=1e-9)
    assert gain == pytest.approx(np.exp(-np.polyfit(np.arange(len(logs)), logs, 1)[0]), rel=1e-12)
    assert 0 < gain < 1
