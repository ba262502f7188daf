"""resflow.record / resflow.watch on models resflow did not build, checked against retain_grad.

The reference: forward pre-hooks that keep each block call's input x (x.retain_grad()), one
forward and backward, then float64 norms of x.grad, x and each block's own parameter gradients.
Models with in-place ReLUs are measured by the reference on a copy with inplace=False (same weights).
"""

import copy
import math
import os

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import resflow
from resflow.cli.app import app
from resflow.errors import ResflowError
from resflow.results.files import read_run, write_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RTOL = 2e-5  # float32 sums against float64 ones


# ---------------------------------------------------------------------------------------------
# Models


class Basic(nn.Module):
    """torchvision's BasicBlock pattern: in-place ReLUs, `out += identity`, a downsample path."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """A stem, two named stages (layer1, layer2, as torchvision names them), a head."""

    def __init__(self, width=8, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Basic(width, width), Basic(width, width), Basic(width, width))
        self.layer2 = nn.Sequential(Basic(width, 2 * width, 2), Basic(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


class Shared(nn.Module):
    """One block applied twice (shared weights), between two linear maps."""

    def __init__(self, w=6):
        super().__init__()
        self.inp = nn.Linear(w, w)
        self.block = nn.Sequential(nn.Linear(w, w), nn.Tanh())
        self.out = nn.Linear(w, 3)

    def forward(self, x):
        return self.out(self.block(self.block(self.inp(x))))


def no_inplace(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return ref


def tiny_gpt2(n_layer=2):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=n_layer,
        n_embd=32,
        n_head=2,
        vocab_size=61,
        n_positions=16,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def tiny_hf_resnet(head=True):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], layer_type="basic", num_labels=4)
    return (transformers.ResNetForImageClassification if head else transformers.ResNetModel)(cfg)


# ---------------------------------------------------------------------------------------------
# The reference


def _input_of(args, kwargs):
    x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    return x if x is not None else kwargs.get("hidden_states")


def reference(model, inputs, loss_fn, block_names):
    """Per block call (forward order): (name, ||dL/dx||, rms(x), ||grad of its own params||), float64."""
    modules = dict(model.named_modules())
    calls = []

    def hook(name):
        def pre(module, args, kwargs):
            x = _input_of(args, kwargs)
            x.retain_grad()
            calls.append((name, x, x.detach().double().clone()))

        return pre

    handles = [modules[n].register_forward_pre_hook(hook(n), with_kwargs=True) for n in block_names]
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    else:
        args, kwargs = ((inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)), {}
    args = tuple(a.detach().requires_grad_(True) if a.is_floating_point() else a for a in args)
    model.zero_grad(set_to_none=True)
    try:
        loss_fn(model(*args, **kwargs)).backward()
    finally:
        for h in handles:
            h.remove()
    owner = {}
    for n in block_names:  # a parameter belongs to the innermost block holding it
        for p in modules[n].parameters():
            if len(n) > len(owner.get(id(p), "")):
                owner[id(p)] = n
    out = []
    for name, x, xv in calls:
        own = [p.grad.double() for p in modules[name].parameters() if owner[id(p)] == name and p.grad is not None]
        pg = torch.sqrt(sum((g**2).sum() for g in own)).item() if own else math.nan
        out.append((name, x.grad.double().norm().item(), (xv.norm() / math.sqrt(xv.numel())).item(), pg))
    return out


def assert_matches(result, ref):
    g = result.grads
    assert list(g["module"]) == [r[0] for r in ref]
    assert list(g["layer"]) == list(range(len(ref)))
    for col, k in (("input_grad_norm", 1), ("activation_rms", 2), ("param_grad_norm", 3)):
        got, want = g[col].to_numpy(), [r[k] for r in ref]
        assert got == pytest.approx(want, rel=RTOL, abs=1e-12), col


def random_loss(out):
    """resflow's default loss, written out: <v, logits> with v ~ N(0,1) from data seed 0, float64 cast."""
    t = out if isinstance(out, torch.Tensor) else out.logits
    gen = torch.Generator().manual_seed(0 + 1_000_003)
    v = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
    return (t * v).sum()


# ---------------------------------------------------------------------------------------------
# record against the reference


def test_user_resnet_with_inplace_relu_matches_retain_grad():
    torch.manual_seed(1)
    model = TinyResNet()
    x = torch.randn(4, 3, 8, 8)
    result = resflow.record(model, x)
    names = [f"layer1.{i}" for i in range(3)] + ["layer2.0", "layer2.1"]
    assert_matches(result, reference(no_inplace(model), x, random_loss, names))
    assert (result.grads["block"] == "Basic").all() and (result.grads["depth"] == 5).all()
    # the first block's input is the stem's output: a gradient exists there, and is not 0
    assert result.grads["input_grad_norm"].iloc[0] > 0


def test_record_leaves_grads_buffers_and_hooks_as_found():
    torch.manual_seed(2)
    model = TinyResNet()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)
    before = {n: b.clone() for n, b in model.named_buffers()}
    resflow.record(model, torch.randn(4, 3, 8, 8))
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_gpt2_matches_retain_grad_with_the_default_loss():
    model = tiny_gpt2(3)
    ids = torch.randint(61, (2, 8), generator=torch.Generator().manual_seed(3))
    result = resflow.record(model, {"input_ids": ids})
    assert list(result.grads["module"]) == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    assert_matches(result, reference(model, {"input_ids": ids}, random_loss, list(result.grads["module"])))
    # params.csv: each block's parameters named within it, the rest (embeddings, final norm) at layer = depth
    p = result.params
    assert set(p.loc[p["layer"] == 0, "param"]) >= {"attn.c_attn.weight", "ln_1.weight", "mlp.c_fc.weight"}
    assert {"transformer.wte.weight", "transformer.ln_f.weight"} <= set(p.loc[p["layer"] == 3, "param"])


def test_hf_resnet_matches_retain_grad():
    model = tiny_hf_resnet()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 3, 1])
    loss = lambda out: nn.functional.cross_entropy(out.logits, labels)
    result = resflow.record(model, {"pixel_values": x}, loss)
    names = [
        "resnet.encoder.stages.0.layers.0",
        "resnet.encoder.stages.0.layers.1",
        "resnet.encoder.stages.1.layers.0",
        "resnet.encoder.stages.1.layers.1",
    ]
    assert_matches(result, reference(model, {"pixel_values": x}, loss, names))


def test_block_called_twice_is_two_sites_sharing_the_total_parameter_gradient():
    torch.manual_seed(5)
    model = Shared()
    x = torch.randn(4, 6)
    result = resflow.record(model, x, blocks=["block"])
    assert list(result.grads["module"]) == ["block", "block"]
    assert_matches(result, reference(model, x, random_loss, ["block"]))
    pg = result.grads["param_grad_norm"]
    assert pg.iloc[0] == pg.iloc[1]  # the total gradient of the shared weights, in both rows


def test_frozen_parameters_read_nan_not_zero():
    torch.manual_seed(6)
    model = TinyResNet()
    for p in model.layer1[1].parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    result = resflow.record(model, x)
    g = result.grads.set_index("module")
    assert math.isnan(g.loc["layer1.1", "param_grad_norm"])
    assert g.loc["layer1.1", "input_grad_norm"] > 0  # the gradient still flows through it
    p = result.params
    assert p.loc[(p["layer"] == 1), "grad_norm"].isna().all()
    names = [f"layer1.{i}" for i in range(3)] + ["layer2.0", "layer2.1"]
    ref = reference(no_inplace(model), x, random_loss, names)
    got = result.grads["input_grad_norm"].to_numpy()
    assert got == pytest.approx([r[1] for r in ref], rel=RTOL)


def test_first_block_fed_by_the_input_gets_its_gradient():
    """record() gives floating inputs requires_grad, so layer 0 is measured, not a silent 0."""
    torch.manual_seed(7)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3)])
    x = torch.randn(4, 5)
    result = resflow.record(model, x)
    assert list(result.grads["module"]) == ["0", "1", "2"]
    assert_matches(result, reference(model, x, random_loss, ["0", "1", "2"]))
    assert not x.requires_grad  # the caller's tensor is untouched


def test_blocks_by_pattern_and_by_module():
    torch.manual_seed(8)
    model = TinyResNet()
    x = torch.randn(2, 3, 8, 8)
    by_glob = resflow.record(model, x, blocks=["layer2.*"])
    assert list(by_glob.grads["module"]) == ["layer2.0", "layer2.1"]
    by_module = resflow.record(model, x, blocks=[model.layer2[0], model.layer2[1]])
    assert by_module.grads["input_grad_norm"].tolist() == by_glob.grads["input_grad_norm"].tolist()
    deep = resflow.record(model, x, blocks="layer*.*")  # `*` stays within one name part
    assert len(deep.grads) == 5


def test_record_writes_a_results_dir_that_show_reads(tmp_path):
    model = tiny_gpt2(2)
    ids = torch.randint(61, (2, 8), generator=torch.Generator().manual_seed(9))
    result = resflow.record(model, ids, name="gpt2-tiny")
    write_run(result, tmp_path / "r")
    back = read_run(tmp_path / "r")
    assert list(back.grads["module"]) == ["transformer.h.0", "transformer.h.1"]
    assert back.grads["input_grad_norm"].tolist() == result.grads["input_grad_norm"].tolist()
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "r")])
    assert shown.exit_code == 0, shown.output
    assert "gpt2-tiny" in shown.output


# ---------------------------------------------------------------------------------------------
# Bad input


def no_hooks(model):
    return all(not m._forward_pre_hooks for m in model.modules())


def test_no_discoverable_blocks_names_candidates():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ResflowError, match="no repeated blocks.*pass blocks=.*'0'"):
        resflow.record(model, torch.randn(2, 4))


def test_a_pattern_matching_nothing():
    with pytest.raises(ResflowError, match="'stage\\*' matches no module"):
        resflow.record(TinyResNet(), torch.randn(2, 3, 8, 8), blocks=["stage*"])


def test_non_scalar_loss_and_hooks_removed():
    model = TinyResNet()
    with pytest.raises(ResflowError, match=r"loss: must return a scalar, got a tensor of shape \(2, 5\)"):
        resflow.record(model, torch.randn(2, 3, 8, 8), loss=lambda out: out)
    assert no_hooks(model)


def test_inputs_the_model_rejects_give_its_own_message():
    model = TinyResNet()
    with pytest.raises(ResflowError, match="the model rejected the inputs: RuntimeError: .*channels"):
        resflow.record(model, torch.randn(2, 4, 8, 8))
    assert no_hooks(model) and all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# watch in a training loop


def batches(n, seed=10):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 8, 8, generator=gen), torch.randint(5, (4,), generator=gen)) for _ in range(n)]


@pytest.mark.parametrize("every", [1, 2])
def test_watch_recorded_steps_equal_a_record_at_the_same_weights(every):
    torch.manual_seed(11)
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {}
    with resflow.watch(model, every=every) as w:
        for step, (x, y) in enumerate(batches(5)):
            if step % every == 0:  # the same weights and batch, measured separately
                loss_fn = lambda out, y=y: nn.functional.cross_entropy(out, y)
                expected[step] = resflow.record(copy.deepcopy(model), x, loss_fn).grads
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
            opt.zero_grad()
    assert w.recorded == list(range(0, 5, every))
    g = w.grads
    assert sorted(set(g["step"])) == list(range(0, 5, every))
    for step, want in expected.items():
        got = g[g["step"] == step]
        assert list(got["module"]) == list(want["module"])
        for col in ("input_grad_norm", "activation_rms", "param_grad_norm"):
            assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=RTOL), (step, col)
    assert list(w.train["step"]) == [0, 1, 2, 3, 4]
    assert w.train["loss"].notna().all()


def test_watch_arms_hooks_only_for_recorded_steps():
    torch.manual_seed(12)
    model = TinyResNet()
    hooked = []

    def has_hooks():
        return any(m._forward_pre_hooks for m in model.modules())

    with resflow.watch(model, every=3) as w:
        for x, y in batches(7):
            hooked.append(has_hooks())
            nn.functional.cross_entropy(model(x), y).backward()
            w.step()
            model.zero_grad()
    assert hooked == [True, False, False, True, False, False, True]
    assert not has_hooks()
    assert w.recorded == [0, 3, 6]


def test_watch_every_step_with_a_leaf_input_that_outlives_the_steps():
    """The same input tensor (requiring grad) every step: each step's hooks on it are its own."""
    torch.manual_seed(16)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3)])
    x = torch.randn(4, 5, requires_grad=True)
    with resflow.watch(model, every=1) as w:
        for _ in range(3):
            model(x).pow(2).sum().backward()
            w.step()
            assert not x._backward_hooks  # step k's hook on x is gone before step k+1's forward
            model.zero_grad()
            x.grad = None
    want = resflow.record(model, x, lambda out: out.pow(2).sum()).grads["input_grad_norm"].tolist()
    g = w.grads
    assert g.loc[g["step"] == 2, "input_grad_norm"].tolist() == pytest.approx(want, rel=RTOL)


def test_watch_no_grad_input_reads_nan_not_zero():
    """A first block fed by the data directly: no gradient exists there in the user's loop."""
    torch.manual_seed(13)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3)])
    with resflow.watch(model) as w:
        model(torch.randn(4, 5)).sum().backward()
        w.step()
    g = w.grads
    assert math.isnan(g["input_grad_norm"].iloc[0]) and (g["input_grad_norm"].iloc[1:] > 0).all()


def test_watch_crash_leaves_a_readable_results_dir(tmp_path):
    torch.manual_seed(14)
    model = TinyResNet()
    out = tmp_path / "run"
    with pytest.raises(KeyError):
        with resflow.watch(model, every=2, out=out, name="mine") as w:
            for step, (x, y) in enumerate(batches(6)):
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                if step == 5:
                    raise KeyError("the user's bug")
                w.step(loss)
                model.zero_grad()
    back = read_run(out)
    assert sorted(set(back.grads["step"])) == [0, 2, 4]
    assert list(back.train["step"]) == [0, 1, 2, 3, 4]
    assert not any(m._forward_pre_hooks for m in model.modules())
    shown = CliRunner().invoke(app, ["show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    from resflow.report.figures.plots import describe

    assert describe(back)[0] == "mine: 5 × Basic"  # (no 'width nan' from the empty config columns)


def test_watch_flushes_after_every_recorded_step(tmp_path):
    torch.manual_seed(15)
    model = TinyResNet()
    out = tmp_path / "run"
    seen = []
    with resflow.watch(model, every=2, out=out) as w:
        for x, y in batches(4):
            nn.functional.cross_entropy(model(x), y).backward()
            w.step()
            model.zero_grad()
            seen.append(sorted(set(read_run(out).grads["step"])) if (out / "grads.csv").exists() else None)
    assert seen == [[0], [0], [0, 2], [0, 2]]


def test_watch_bad_every():
    with pytest.raises(ResflowError, match="every: must be a whole number >= 1, got 0"):
        resflow.watch(TinyResNet(), every=0)


def test_bfloat16_model_norms_are_summed_in_float32():
    """A bfloat16 model's norms are summed in float32: they agree with float64 sums of the same
    bfloat16 tensors to float32's rounding (bfloat16 sums were ~1e-2 off)."""
    torch.manual_seed(17)
    model = nn.Sequential(nn.Linear(8, 8), *[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3)]).to(torch.bfloat16)
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    result = resflow.record(model, x)
    ref = reference(model, x, random_loss, ["1", "2", "3"])
    for col, k in (("input_grad_norm", 1), ("activation_rms", 2), ("param_grad_norm", 3)):
        assert result.grads[col].to_numpy() == pytest.approx([r[k] for r in ref], rel=1e-5), col


class KwBlock(nn.Module):
    """Called with keyword arguments only, returning a tuple (as Hugging Face blocks may)."""

    def __init__(self, w=6):
        super().__init__()
        self.lin = nn.Linear(w, w)

    def forward(self, hidden_states=None, attention_mask=None):
        return (hidden_states + torch.tanh(self.lin(hidden_states)), None)


class KwModel(nn.Module):
    def __init__(self, w=6, depth=3):
        super().__init__()
        self.embed = nn.Linear(w, w)
        self.layers = nn.ModuleList([KwBlock(w) for _ in range(depth)])

    def forward(self, x, mask=None):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(hidden_states=h, attention_mask=mask)[0]
        return {"last": h}


def test_blocks_called_with_keyword_arguments_and_returning_tuples():
    torch.manual_seed(18)
    model = KwModel()
    x = torch.randn(3, 6)
    result = resflow.record(model, {"x": x})
    names = ["layers.0", "layers.1", "layers.2"]
    assert list(result.grads["module"]) == names

    def dict_loss(out):  # the default loss on the dict output's first tensor, written out
        return random_loss(out["last"])

    assert_matches(result, reference(model, {"x": x}, dict_loss, names))
