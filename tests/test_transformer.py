"""Transformer blocks against an independent functional re-implementation and torch.autograd:
per-sublayer input gradients, causal mask, zero-init/ReZero identity, DeepNorm constants, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.measure.recorder import Recorder
from resflow.models import build_model
from resflow.models.transformer import deepnorm_alpha, deepnorm_beta

B, T, C, H, DEPTH = 2, 5, 8, 2, 3


def tiny(**model):
    base = dict(block="transformer", depth=DEPTH, width=C, heads=H, residual=True, norm="pre")
    return load_config(
        dict(name="tiny", dtype="float64", loss="random", model={**base, **model}, data=dict(batch_size=B, seq_len=T))
    )


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg.model, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# An independent forward pass from the parameters, written with plain tensor ops


def ref_norm(x, p, prefix, kind):
    w = p[f"{prefix}.norm.weight"]
    if kind == "rmsnorm":
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + p[f"{prefix}.norm.bias"]


def lin(p, name, x):
    y = x @ p[f"{name}.weight"].T
    return y + p[f"{name}.bias"] if f"{name}.bias" in p else y


def ref_attn(p, x, heads):
    b, t, c = x.shape
    split = lambda z: z.reshape(b, t, heads, c // heads).permute(0, 2, 1, 3)  # (B, H, T, D)
    q, k, v = (split(lin(p, f"attn.{n}", x)) for n in "qkv")
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    w = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return lin(p, "attn.out", (w @ v).permute(0, 2, 1, 3).reshape(b, t, c))


def ref_ffn(p, x, kind):
    if kind == "swiglu":
        h = F.silu(lin(p, "ffn.gate", x)) * lin(p, "ffn.up", x)
    else:
        h = {"gelu": F.gelu, "relu": F.relu}[kind](lin(p, "ffn.up", x))
    return lin(p, "ffn.out", h)


def ref_forward(model, cfg, x):
    """Returns the output and the residual-stream input of every sublayer, in site order."""
    m = cfg.model
    a, skip = 1.0, 1.0
    if m.residual_scale == "deepnorm":
        skip = (2 * m.depth) ** 0.25
    elif not m.residual:
        skip = 0.0
    else:
        a = m.residual_scale
    inputs = []
    for block in model.blocks:
        p = {name: t for site in block.sites(0) for name, t in site.params}
        for prefix, f in (("attn", lambda u: ref_attn(p, u, m.heads)), ("ffn", lambda u: ref_ffn(p, u, m.ffn))):
            inputs.append(x)
            alpha = p[f"{prefix}.alpha"] if m.rezero else a
            if m.norm == "pre":
                x = skip * x + alpha * f(ref_norm(x, p, prefix, m.norm_type))
            elif m.norm == "post":
                x = ref_norm(skip * x + alpha * f(x), p, prefix, m.norm_type)
            else:
                x = skip * x + alpha * f(x)
    if m.has_final_norm:
        p = {"final.norm.weight": model.final_norm.weight}
        if m.norm_type == "layernorm":
            p["final.norm.bias"] = model.final_norm.bias
        x = ref_norm(x, p, "final", m.norm_type)
    return x, inputs


def perturb_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))


def recorded_pass(model):
    """Perturb the norms' weights, then one recorded forward/backward of loss <v, out>: (x, v, out, record)."""
    perturb_norms(model)
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, T, C, dtype=torch.float64)
    with Recorder(model) as rec:
        out = model(x)
        (out * v).sum().backward()
        record = rec.collect()
    return x, v, out, record


CASES = [(n, t, f) for n in ("pre", "post", "none") for t in ("layernorm", "rmsnorm") for f in ("gelu", "swiglu")]


@pytest.mark.parametrize("norm,norm_type,ffn", CASES, ids=["-".join(c) for c in CASES])
def test_sublayer_input_grads_match_autograd(norm, norm_type, ffn):
    cfg = tiny(norm=norm, norm_type=norm_type, ffn=ffn, residual_scale=0.7)
    model = build(cfg)
    x, v, out, record = recorded_pass(model)
    ref_out, ref_inputs = ref_forward(model, cfg, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    ref_grads = torch.autograd.grad((ref_out * v).sum(), ref_inputs)
    assert record.sublayer == ["attn", "ffn"] * DEPTH and record.layer == [l for l in range(DEPTH) for _ in (0, 1)]
    expected = [g.norm().item() for g in ref_grads]
    assert record.input_grad_norm == pytest.approx(expected, rel=1e-10)
    # parameter gradients: the last block's FFN output weights, by name
    w = model.blocks[-1].ffn_res.f.out.weight
    (g_w,) = torch.autograd.grad((ref_forward(model, cfg, x)[0] * v).sum(), [w])
    i = [k for k, (l, n) in enumerate(zip(record.param_layer, record.param_name)) if l == DEPTH - 1 and n == "ffn.out.weight"]
    assert len(i) == 1 and record.param_grad[i[0]] == pytest.approx(g_w.norm().item(), rel=1e-10)


@pytest.mark.parametrize(
    "extra",
    [
        dict(residual=False),
        dict(residual_scale="deepnorm", norm="post"),
        dict(rezero=True, norm="none"),
        dict(ffn="relu", bias=False),
    ],
    ids=["no-residual", "deepnorm", "rezero", "relu-nobias"],
)
def test_variants_match_reference_forward(extra):
    cfg = tiny(**extra)
    model = build(cfg)
    if cfg.model.rezero:
        with torch.no_grad():
            for block in model.blocks:
                block.attn_res.alpha.fill_(0.4)
                block.ffn_res.alpha.fill_(-0.6)
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    out = model(x)
    ref_out, ref_inputs = ref_forward(model, cfg, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)


def test_causal_mask_later_token_does_not_change_earlier_outputs():
    model = build(tiny(norm="post"))
    x = torch.randn(B, T, C, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 3] += 1.0
    y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[:, :3], y2[:, :3], rtol=0, atol=1e-12)
    assert (y[:, 3:] - y2[:, 3:]).abs().amax() > 1e-3


def test_grads_have_one_row_per_residual_connection_and_final_norm_params():
    cfg = load_config("pre-norm", ["model.depth=2", "model.width=16", "data.batch_size=2", "data.seq_len=4", "seeds=2"])
    res = run(cfg)
    assert len(res.grads) == 2 * 2 * 2  # seeds x depth x 2 sublayers
    assert list(res.grads["sublayer"][:4]) == ["attn", "ffn", "attn", "ffn"]
    final = res.params[res.params["param"].str.startswith("final_norm")]
    assert sorted(final["param"].unique()) == ["final_norm.bias", "final_norm.weight"]
    assert (final["layer"] == 2).all()
    names = set(res.params["param"])
    assert {"attn.out.weight", "ffn.out.weight", "attn.q.weight", "attn.norm.weight", "ffn.up.weight"} <= names


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_zero_out_makes_the_stack_the_identity(norm):
    cfg = tiny(norm=norm, ffn="swiglu", norm_type="rmsnorm", final_norm=False, init=dict(scheme="xavier", zero_out=True))
    model = build(cfg)
    x, v, out, record = recorded_pass(model)
    assert torch.equal(out, x)
    assert record.input_grad_norm == [v.norm().item()] * (2 * DEPTH)  # every sublayer gets exactly dL/dout
    for block in model.blocks:
        attn, ffn = block.attn_res.f, block.ffn_res.f
        for w in (attn.q.weight, attn.k.weight, attn.v.weight, ffn.up.weight, ffn.gate.weight):
            assert torch.count_nonzero(w.grad) == 0  # behind a zero output projection
        # the output projection's gradient: sum over (b, t) of v ⊗ h, h the branch's hidden at input x
        p = {n: t for s in block.sites(0) for n, t in s.params}
        u = ref_norm(x, p, "ffn", "rmsnorm") if norm == "pre" else x
        h = F.silu(lin(p, "ffn.gate", u)) * lin(p, "ffn.up", u)
        torch.testing.assert_close(ffn.out.weight.grad, torch.einsum("btc,bth->ch", v, h), rtol=1e-10, atol=1e-12)
        assert attn.out.weight.grad.norm() > 0


def test_rezero_identity_and_branch_grads_exactly_zero():
    cfg = tiny(norm="none", rezero=True, init=dict(scheme="xavier"))
    model = build(cfg)
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, T, C, dtype=torch.float64)
    out = model(x)
    assert torch.equal(out, x)
    (out * v).sum().backward()
    for block in model.blocks:
        for res, prefix in ((block.attn_res, "attn"), (block.ffn_res, "ffn")):
            for name, p in res.f.named_parameters():
                assert torch.count_nonzero(p.grad) == 0, f"{prefix}.{name}"
            # dL/dα = <v, f(x)> at the identity stack's input x
            expected = (v * res.f(x)).sum()
            torch.testing.assert_close(res.alpha.grad, expected.detach(), rtol=1e-10, atol=1e-12)
            assert res.alpha.grad != 0


def test_deepnorm_constants_for_six_layers():
    assert deepnorm_alpha(6) == pytest.approx(1.8612, abs=5e-5)
    assert deepnorm_beta(6) == pytest.approx(0.3799, abs=5e-5)


def test_deepnorm_scales_value_output_and_ffn_weights_by_beta():
    base = tiny(norm="post", init=dict(scheme="xavier"))
    deep = tiny(norm="post", residual_scale="deepnorm", init=dict(scheme="xavier"))
    m0, m1 = build(base), build(deep)
    beta = deepnorm_beta(DEPTH)
    for b0, b1 in zip(m0.blocks, m1.blocks):
        a0, a1, f0, f1 = b0.attn_res.f, b1.attn_res.f, b0.ffn_res.f, b1.ffn_res.f
        for n in ("q", "k"):
            assert torch.equal(getattr(a0, n).weight, getattr(a1, n).weight)
        for w0, w1 in (
            (a0.v.weight, a1.v.weight),
            (a0.out.weight, a1.out.weight),
            (f0.up.weight, f1.up.weight),
            (f0.out.weight, f1.out.weight),
        ):
            torch.testing.assert_close(w1, beta * w0, rtol=1e-12, atol=0)
        assert b1.attn_res.skip == pytest.approx((2 * DEPTH) ** 0.25)


@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_deepnorm_beta_scales_the_biases_of_the_layers_it_scales(ffn):
    """init.scheme default draws biases that are not zero: DeepNet's reference code (torchscale) divides
    every parameter of v_proj, out_proj, fc1 and fc2 by (8N)^(1/4), biases included; checked here
    against that hand computation, N = 3: β = 24^(-1/4), on the same draws without DeepNorm."""
    base = tiny(norm="post", ffn=ffn, init=dict(scheme="default"))
    deep = tiny(norm="post", ffn=ffn, residual_scale="deepnorm", init=dict(scheme="default"))
    m0, m1 = build(base), build(deep)
    beta = 1.0 / math.sqrt(math.sqrt(8.0 * DEPTH))
    scaled = ["attn.v", "attn.out", "ffn.up", "ffn.out"] + (["ffn.gate"] if ffn == "swiglu" else [])
    for b0, b1 in zip(m0.blocks, m1.blocks):
        p0 = {f"attn.{n}": p for n, p in b0.attn_res.f.named_parameters()} | {
            f"ffn.{n}": p for n, p in b0.ffn_res.f.named_parameters()
        }
        p1 = {f"attn.{n}": p for n, p in b1.attn_res.f.named_parameters()} | {
            f"ffn.{n}": p for n, p in b1.ffn_res.f.named_parameters()
        }
        assert p0.keys() == p1.keys()
        for name in p0:
            layer = name.rsplit(".", 1)[0]
            if layer in scaled:
                assert bool((p0[name] != 0).all()), name  # (a bias of zero would prove nothing)
                torch.testing.assert_close(p1[name], p0[name] * beta, rtol=1e-15, atol=0, msg=name)
            else:
                assert torch.equal(p1[name], p0[name]), name  # q, k: as the scheme drew them
        for norm in ("attn_res", "ffn_res"):  # the norms keep their own init (weight 1, bias 0)
            assert torch.equal(getattr(b1, norm).norm.weight, getattr(b0, norm).norm.weight)
            assert torch.equal(getattr(b1, norm).norm.bias, getattr(b0, norm).norm.bias)


def test_shared_weights_apply_deepnorm_beta_once():
    cfg = tiny(norm="post", residual_scale="deepnorm", share_weights=True, init=dict(scheme="constant", scale=1.0))
    model = build(cfg)
    assert torch.allclose(model.blocks[0].attn_res.f.v.weight, torch.full((C, C), deepnorm_beta(DEPTH), dtype=torch.float64))


def test_token_input_repeats_embedding_rows():
    cfg = tiny()
    cfg = cfg.replace({"data.input": "tokens", "data.vocab": 3})
    from resflow.measure.data import data_generator, make_input

    x = make_input(cfg.data, (B, T, C), data_generator(0))
    rows = {tuple(r.tolist()) for r in x.reshape(-1, C)}
    assert x.shape == (B, T, C) and len(rows) <= 3


def test_mlp_configs_unchanged_and_round_trip():
    cfg = load_config("deep50")
    assert cfg.model.activation == "tanh" and not hasattr(cfg.model, "heads") and cfg.data.seq_len is None
    assert cfg.replace(["model.depth=3"]).model.depth == 3
    tf = load_config("pre-norm")
    assert tf.replace(["model.norm=post"]).model.has_final_norm is False  # final_norm follows norm


runner = CliRunner()


@pytest.mark.parametrize(
    "config,sets,fragment",
    [
        ("pre-norm", ["model.heads=3"], "model.heads: 3 heads do not divide model.width 256"),
        ("pre-norm", ["model.rezero=true", "model.residual=false"], "model.rezero"),
        ("pre-norm", ["model.residual_scale=deepnorm"], "needs model.norm: post"),
        ("pre-norm", ["model.residual_scale=big"], "model.residual_scale: must be a number or 'deepnorm'"),
        ("pre-norm", ["model.activation=tanh"], "model.ffn"),
        ("pre-norm", ["loss=sum"], "zero gradient through the LayerNorm"),
        ("pre-norm", ["data.vocab=10"], "data.vocab: only for data.input: tokens"),
        ("deep50", ["model.heads=4"], "model.heads: not a key of block 'mlp'"),
        ("deep50", ["data.seq_len=8"], "data.seq_len: only for model.block: transformer"),
        ("deep50", ["model.init.zero_out=true"], "model.init.zero_out"),
        ("deep50", ["model.residual_scale=deepnorm"], "deepnorm"),
    ],
)
def test_bad_combinations_are_one_line_errors(tmp_path, config, sets, fragment):
    args = ["run", config, "--out", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert not (tmp_path / "r").exists()


def test_cli_runs_a_small_transformer(tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "microgpt",
            "--out",
            str(tmp_path / "m"),
            "--set",
            "model.depth=2",
            "--set",
            "model.width=16",
            "--set",
            "data.seq_len=4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "attn" in result.output and "ffn" in result.output and "2 × transformer" in result.output
