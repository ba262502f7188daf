"""Conv ResNets, BatchNorm/GroupNorm and the digits dataset: every recorded number against autograd on
the same model and batch (block inputs' grads via retain_grad, parameters' .grad), BatchNorm's
gradient through the batch statistics against a hand-written BatchNorm, the dataset's split, the
classify task's accuracy against a separate evaluation, and sweeps/compare over the new keys."""

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config import load_config
from resflow.config.memory import IMAGES, check_memory, estimate
from resflow.config.schema import DATASET_NAMES
from resflow.experiment import prepare_seed, run
from resflow.measure import batched
from resflow.measure.datasets import DATASETS, Batches, load
from resflow.models import build_model
from resflow.models.conv import ConvResNet
from resflow.models.init import init_linears

CPU = torch.device("cpu")
runner = CliRunner()


def conv_cfg(*sets, depth=8, width=4, batch=8):
    base = {
        "dtype": "float64",
        "model": {"block": "conv", "depth": depth, "width": width, "residual": True},
        "data": {"dataset": "digits", "batch_size": batch},
    }
    return load_config(base, list(sets))


def reference(model, x, loss_fn):
    """By hand, without resflow's hooks: the stem, each block with its input's grad retained, the
    head; norms in float64 of autograd's tensors. -> (per block: ||dloss/dx||, rms(x), ||param grads||;
    {(layer, name): (||grad||, ||value||)} for every parameter, the stem at -1 and the head at 3n)."""
    model.zero_grad(set_to_none=True)
    if isinstance(model, ConvResNet):
        stem, head = model.stem, model.head
    else:  # an mlp Classifier
        stem, head = model.stem, (lambda h: model.head(model.stack.final_norm(h)))
    h = stem(x.detach())
    inputs = []
    for block in model.blocks:
        h.retain_grad()
        inputs.append(h)
        h = block(h)
    loss_fn(head(h)).backward()
    grad = [float(t.grad.double().norm()) for t in inputs]
    rms = [float(t.detach().double().pow(2).mean().sqrt()) for t in inputs]
    pgrad = [math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in b.parameters())) for b in model.blocks]
    params = {}
    for layer, block in enumerate(model.blocks):
        for name, p in block.named_parameters():
            name = name.replace("pre.", "norm.").replace("post.", "norm.")  # an mlp block's norm (one of the two)
            params[(layer, name)] = (float(p.grad.double().norm()), float(p.detach().double().norm()))
    for name, p in model.stem.named_parameters():
        params[(-1, f"stem.{name}" if isinstance(model, ConvResNet) else f"stem.linear.{name}")] = (
            float(p.grad.double().norm()),
            float(p.detach().double().norm()),
        )
    for name, p in model.head.named_parameters():
        key = f"head.{name}" if isinstance(model, ConvResNet) else f"head.linear.{name}"
        params[(len(model.blocks), key)] = (float(p.grad.double().norm()), float(p.detach().double().norm()))
    return grad, rms, pgrad, params


def assert_matches_reference(cfg, seed=0, rel=1e-10):
    result = run(cfg)
    model, x, loss_fn = prepare_seed(cfg, seed, CPU)  # the same model and batch, built again
    grad, rms, pgrad, params = reference(model, x, loss_fn)
    g = result.grads[result.grads["seed"] == seed]
    assert g["layer"].tolist() == list(range(len(grad)))
    assert g["input_grad_norm"].tolist() == pytest.approx(grad, rel=rel)
    assert g["activation_rms"].tolist() == pytest.approx(rms, rel=rel)
    assert g["param_grad_norm"].tolist() == pytest.approx(pgrad, rel=rel)
    p = result.params[result.params["seed"] == seed]
    recorded = {(int(r.layer), r.param): (r.grad_norm, r.value_norm) for r in p.itertuples()}
    assert set(recorded) == set(params) and len(p) == len(params)  # every parameter once, stem and head too
    for key, (gn, vn) in params.items():
        assert recorded[key][0] == pytest.approx(gn, rel=rel, abs=1e-300), key
        assert recorded[key][1] == pytest.approx(vn, rel=rel), key
    return result, grad


CONV_VARIANTS = {
    "residual-bn": [],
    "plain-bn": ["model.residual=false"],
    "residual-nonorm": ["model.norm=none"],
    "preact-projection": ["model.preactivation=true", "model.shortcut=projection"],
    "projection-groupnorm": ["model.shortcut=projection", "model.norm_type=groupnorm", "model.norm_groups=2"],
    "plain-preact-kaiming": ["model.residual=false", "model.preactivation=true", "model.init.scheme=kaiming"],
}


@pytest.mark.parametrize("sets", CONV_VARIANTS.values(), ids=CONV_VARIANTS.keys())
def test_conv_records_equal_autograd(sets):
    result, grad = assert_matches_reference(conv_cfg(*sets))
    assert len(grad) == 3 and all(v > 0 for v in grad)  # depth 8: 3 blocks, each given a gradient


def test_conv_records_equal_autograd_without_a_dataset_two_seeds():
    cfg = load_config(
        {
            "dtype": "float64",
            "seeds": 2,
            "loss": "random",
            "model": {"block": "conv", "depth": 14, "width": 4, "residual": True},
            "data": {"batch_size": 4},
        }
    )
    for seed in (0, 1):
        assert_matches_reference(cfg, seed=seed)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("norm_type", ["batchnorm", "groupnorm"])
def test_mlp_on_digits_with_batch_and_group_norm_equals_autograd(norm, norm_type):
    sets = ["model.norm_groups=4"] if norm_type == "groupnorm" else []
    cfg = load_config(
        {
            "dtype": "float64",
            "model": {"depth": 4, "width": 16, "residual": True, "norm": norm, "norm_type": norm_type},
            "data": {"dataset": "digits", "batch_size": 8},
        },
        sets,
    )
    result, _ = assert_matches_reference(cfg)
    assert {"stem.linear.weight", "head.linear.bias"} <= set(result.params["param"])


class HandBatchNorm(nn.Module):
    """BatchNorm2d in train mode written out: the batch's mean and (biased) variance per channel,
    through which autograd differentiates unless `detach_stats`."""

    def __init__(self, bn: nn.BatchNorm2d, detach_stats: bool):
        super().__init__()
        self.weight, self.bias, self.eps, self.detach_stats = bn.weight, bn.bias, bn.eps, detach_stats

    def forward(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        if self.detach_stats:
            mean, var = mean.detach(), var.detach()
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def _hand_written(model, detach_stats):
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, HandBatchNorm(child, detach_stats))
    return model


def test_batchnorm_gradient_flows_through_the_batch_statistics():
    cfg = conv_cfg("model.residual=false", batch=6)
    result = run(cfg)
    recorded = result.grads["input_grad_norm"].tolist()
    model, x, loss_fn = prepare_seed(cfg, 0, CPU)
    through, _, _, _ = reference(_hand_written(model, detach_stats=False), x, loss_fn)
    frozen, _, _, _ = reference(_hand_written(model, detach_stats=True), x, loss_fn)
    assert recorded == pytest.approx(through, rel=1e-9)
    # treating the statistics as constants (eval mode's view) gives another gradient: the test can tell
    assert all(abs(a - b) > 1e-3 * b for a, b in zip(recorded, frozen))
    model.eval()
    evaluated, _, _, _ = reference(model, x, loss_fn)
    assert all(abs(a - b) > 1e-3 * b for a, b in zip(recorded, evaluated))


def test_conv_default_init_is_pytorchs_own_conv_init_bit_for_bit():
    torch.manual_seed(5)
    ref = nn.Conv2d(3, 7, 3, bias=True)
    w, b = torch.empty_like(ref.weight), torch.empty_like(ref.bias)
    torch.manual_seed(5)
    init_linears([(w, b)], load_config({"model": {"depth": 1, "width": 4}}).model.init)
    assert torch.equal(w, ref.weight) and torch.equal(b, ref.bias)


def test_conv_shapes_and_layers():
    cfg = conv_cfg("model.width=3", depth=20)
    model = build_model(cfg.model, io=((1, 8, 8), 10))
    assert len(model.blocks) == 9 and len(model.sites()) == 9
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 6n + 1 convs and the head: 6n + 2 = 20 weight layers
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    widths = [b.conv2.out_channels for b in model.blocks]
    assert widths == [3] * 3 + [6] * 3 + [12] * 3
    plain = build_model(cfg.replace({"model.residual": False}).model)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in model.named_parameters()]  # the same layers
    proj = build_model(cfg.replace({"model.shortcut": "projection"}).model)
    assert sum(p.numel() for p in proj.parameters()) > sum(p.numel() for p in model.parameters())


def test_pad_shortcut_is_the_strided_identity_with_zero_channels():
    cfg = conv_cfg(depth=8)
    block = build_model(cfg.model).blocks[1]  # stage 2's first block: 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    s = block.shortcut(x)
    assert s.shape == (2, 8, 4, 4)
    assert torch.equal(s[:, :4], x[:, :, ::2, ::2]) and not s[:, 4:].any()


# ---------------------------------------------------------------------------------------------
# the dataset and the classify task


def test_digits_split_is_fixed_disjoint_and_standardised():
    assert set(DATASETS) == set(DATASET_NAMES)
    d = load("digits")
    assert d.train_x.shape == (1438, 1, 8, 8) and d.test_x.shape == (359, 1, 8, 8) and d.classes == 10
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().images, dtype=torch.float64).flatten(1)
    back = torch.cat([d.train_x, d.test_x]).flatten(1)
    # every image exactly once (up to the standardisation: an affine map of the raw pixels)
    a = (back - back.mean()) / back.std()
    b = (raw - raw.mean()) / raw.std()
    key = lambda t: sorted(map(tuple, t.round(decimals=6).tolist()))  # noqa: E731
    assert key(a) == key(b)
    assert float(d.train_x.mean()) == pytest.approx(0, abs=1e-12) and float(d.train_x.std()) == pytest.approx(1)
    assert (IMAGES["digits"][0], IMAGES["digits"][1]) == (d.shape, d.classes)  # the memory estimator's table


def test_batches_cover_an_epoch_without_repeats():
    d = load("digits")
    batches = Batches(d, torch.Generator().manual_seed(3))
    seen = torch.cat([batches.next(100)[1] for _ in range(14)])  # 1400 of 1438
    ys = [batches.next(100)[1] for _ in range(1)]
    assert len(seen) == 1400 and len(ys[0]) == 100
    counts = torch.bincount(seen, minlength=10)
    assert int(counts.sum()) == 1400 and (counts <= torch.bincount(d.train_y, minlength=10)).all()


def test_classify_accuracy_equals_a_separate_evaluation():
    cfg = conv_cfg("model.depth=8", "train.steps=3", "train.record_every=3", "train.optimizer=sgd", "train.lr=0.05", batch=16)
    result = run(cfg)
    t = result.train
    assert {"eval_accuracy", "train_set_loss", "train_set_accuracy"} <= set(t.columns)
    assert t.loc[t["step"] == 1, "eval_accuracy"].isna().all()  # only at recorded steps
    # step 0, by hand: the same model and first batch, one train-mode step's forward, then the whole test
    # split with BatchNorm's batch statistics (at step 0 its running statistics have seen one batch only)
    model, x, loss_fn = prepare_seed(cfg, 0, CPU)
    first = float(loss_fn(model(x)).detach())
    assert t.loc[t["step"] == 0, "loss"].item() == pytest.approx(first, rel=1e-12)
    model.train()
    d = load("digits")
    with torch.no_grad():
        logits = model(d.test_x)
        acc = float((logits.argmax(1) == d.test_y).double().mean())
        loss = float(nn.functional.cross_entropy(logits, d.test_y))
    row = t[t["step"] == 0].iloc[0]
    assert row["eval_accuracy"] == pytest.approx(acc, abs=1e-12) and row["eval_loss"] == pytest.approx(loss, rel=1e-9)
    counts = torch.bincount(d.train_y).double()
    assert row["task_baseline"] == pytest.approx(float(-(counts / counts.sum() * (counts / counts.sum()).log()).sum()))


def test_mlp_trains_on_flattened_digits():
    cfg = load_config(
        {
            "model": {"depth": 2, "width": 32, "activation": "relu"},
            "data": {"dataset": "digits"},
            "train": {"steps": 60, "batch_size": 32, "lr": 0.01, "record_every": 60},
        }
    )
    t = run(cfg).train
    end = t[t["step"] == 60].iloc[0]
    assert end["train_set_accuracy"] > 0.6 and end["eval_accuracy"] > 0.6  # 10% is chance


def test_conv_is_never_batched_and_memory_is_estimated():
    cfg = conv_cfg("seeds=3")
    assert not batched.supports(cfg)
    assert not batched.supports(
        load_config({"seeds": 3, "loss": "random", "model": {"depth": 3, "width": 4, "norm": "pre", "norm_type": "batchnorm"}})
    )
    assert not batched.supports(load_config({"seeds": 3, "model": {"depth": 3, "width": 4}, "data": {"dataset": "digits"}}))
    small, deep = estimate(conv_cfg(depth=20)), estimate(conv_cfg(depth=56))
    assert 0 < small.total < deep.total
    # parameters: counted as the model's own, times 2 (weights and gradients), in bytes
    model = build_model(conv_cfg("model.shortcut=projection", depth=20, width=16).model)
    n = sum(p.numel() for p in model.parameters())
    assert estimate(conv_cfg("model.shortcut=projection", depth=20, width=16)).params == 2 * n * 8
    with pytest.raises(Exception, match="reduce model.width"):
        check_memory(conv_cfg(depth=110, width=20000), limit=2**30)


# ---------------------------------------------------------------------------------------------
# sweeps and compare over the new keys


CONV_YAML = """model: {block: conv, depth: 8, width: 4, residual: true}
data: {dataset: digits, batch_size: 8}
"""


def test_sweep_and_compare_over_conv_keys(tmp_path):
    cfg = tmp_path / "conv.yaml"
    cfg.write_text(CONV_YAML)
    out = tmp_path / "s"
    args = [
        "sweep",
        str(cfg),
        "--over",
        "model.shortcut=pad,projection",
        "--over",
        "model.preactivation=false,true",
        "--over",
        "model.depth=8,14",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    grads = pd.read_csv(out / "grads.csv")
    assert {"shortcut", "preactivation", "depth"} <= set(grads.columns)
    assert grads["variant"].nunique() == 8
    direct = run(load_config(str(cfg), ["model.shortcut=projection", "model.preactivation=true", "model.depth=14"]))
    point = grads[(grads["shortcut"] == "projection") & (grads["preactivation"]) & (grads["depth"] == 14)]
    assert point["input_grad_norm"].tolist() == direct.grads["input_grad_norm"].tolist()
    before = (out / "grads.csv").read_bytes()
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert (out / "grads.csv").read_bytes() == before
    # default depth axis of a conv config: depths 6n + 2
    auto = runner.invoke(app, ["sweep", str(cfg), "--set", "model.depth=26", "--workers", "1", "--out", str(tmp_path / "d")])
    assert auto.exit_code == 0, auto.output
    assert sorted(pd.read_csv(tmp_path / "d" / "grads.csv")["depth"].unique()) == [8, 14, 26]
    plain = tmp_path / "plain.yaml"
    plain.write_text(CONV_YAML.replace("residual: true", "residual: false"))
    cmp = runner.invoke(app, ["compare", str(cfg), str(plain), "--out", str(tmp_path / "c")])
    assert cmp.exit_code == 0, cmp.output
    assert list(dict.fromkeys(pd.read_csv(tmp_path / "c" / "grads.csv")["variant"])) == ["conv", "plain"]


def test_degradation_quick_version(tmp_path):
    """The bundled experiment's one command, small (width 4, 40 steps, one seed): the deeper plain net
    ends with a higher training-set loss than the shallower one, its residual twin with a lower one."""
    out = tmp_path / "deg"
    result = runner.invoke(
        app,
        [
            "compare",
            "digits-plain20",
            "digits-plain56",
            "digits-res56",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--no-plots",
            "--set",
            "model.width=4",
            "--set",
            "train.steps=40",
            "--set",
            "train.batch_size=32",
            "--set",
            "train.record_every=40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    train = pd.read_csv(out / "train.csv")
    end = train[train["step"] == 40].set_index("variant")["train_set_loss"]
    assert end["digits-plain56"] > 1.2 * end["digits-plain20"]
    assert end["digits-res56"] < end["digits-plain56"] / 1.2


def test_norm_groups_only_checked_where_a_norm_is_built():
    ok = load_config({"model": {"depth": 2, "width": 12, "norm": "none", "norm_type": "groupnorm"}})
    assert ok.model.norm_groups == 8  # the default, unused without a norm
    with pytest.raises(Exception, match="8 groups do not divide model.width 12"):
        load_config({"model": {"depth": 2, "width": 12, "norm": "pre", "norm_type": "groupnorm"}})
