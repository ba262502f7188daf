"""Configs whose model.factory builds the model: run, sweep, compare and their one-line errors."""

import math
import os

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config import load_config
from resflow.config.schema import FACTORY_PATTERN, NAMED_FACTORIES
from resflow.errors import ConfigError
from resflow.experiment import run
from resflow.results.files import read_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def tiny_net(depth=3, width=5):
    """A factory the configs below name as `test_factory:tiny_net` (tests/ is on sys.path)."""
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth)], nn.Linear(width, 2))


def broken_factory(**kwargs):
    raise ValueError("depth must be even")


FACTORY = {"name": "tiny", "model": {"factory": "test_factory:tiny_net", "kwargs": {"depth": 3}}, "data": {"shape": [4, 5]}}


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_factory_run_matches_retain_grad_on_the_same_model_and_batch():
    cfg = load_config(FACTORY, ["seeds=2"])
    assert cfg.loss == "random"  # the default for a factory's model
    result = run(cfg, allow_code=True)  # test_factory:tiny_net is code: opted in (tests/test_factory_trust.py)
    g = result.grads
    assert list(g["module"]) == ["0", "1", "2"] * 2 and list(g["seed"]) == [0] * 3 + [1] * 3
    for seed in (0, 1):
        # the same model, batch and loss, drawn as resflow documents it: torch seeded with the seed,
        # x ~ N(0,1) then v ~ N(0,1) from the data generator (seed + 1_000_003), float64 cast to float32
        torch.manual_seed(seed)
        model = tiny_net(depth=3)
        gen = torch.Generator().manual_seed(seed + 1_000_003)
        x = torch.randn((4, 5), generator=gen, dtype=torch.float64).float().requires_grad_(True)
        v = torch.randn((4, 2), generator=gen, dtype=torch.float64).float()
        xs = []

        def keep(module, args, xs=xs):
            args[0].retain_grad()
            xs.append(args[0])

        handles = [model[i].register_forward_pre_hook(keep) for i in range(3)]
        (model(x) * v).sum().backward()
        for h in handles:
            h.remove()
        got = g[g["seed"] == seed]
        assert got["input_grad_norm"].tolist() == pytest.approx([t.grad.double().norm().item() for t in xs], rel=2e-5)
        assert got["activation_rms"].tolist() == pytest.approx(
            [t.detach().double().norm().item() / math.sqrt(t.numel()) for t in xs], rel=2e-5
        )
        want_p = [torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model[i].parameters())).item() for i in range(3)]
        assert got["param_grad_norm"].tolist() == pytest.approx(want_p, rel=2e-5)
    assert (g["depth"] == 3).all() and (g["block"] == "Sequential").all()


def test_factory_config_round_trips_and_rejects_own_keys():
    cfg = load_config(FACTORY)
    assert cfg.to_dict()["model"] == {"factory": "test_factory:tiny_net", "kwargs": {"depth": 3}}
    assert load_config(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="model.depth: not used with model.factory"):
        load_config({**FACTORY, "model": {**FACTORY["model"], "depth": 3}})
    with pytest.raises(ConfigError, match="needs exactly one of data.shape"):
        load_config({**FACTORY, "data": {}})
    with pytest.raises(ConfigError, match="data.shape: only with model.factory"):
        load_config({"model": {"depth": 2, "width": 3}, "data": {"shape": [2, 3]}})
    with pytest.raises(ConfigError, match="model.kwargs: not a key of block 'mlp'"):
        load_config({"model": {"depth": 2, "width": 3, "kwargs": {"a": 1}}})
    with pytest.raises(ConfigError, match="train.steps: a model.factory model is measured at initialisation only"):
        load_config(FACTORY, ["train.steps=3"])


def test_named_factories_and_pattern_match_the_config_ones():
    from resflow.models import factory, hf

    assert {f"hf:{n}" for n in hf.FACTORIES} == set(NAMED_FACTORIES)
    assert factory.FACTORY_PATTERN.pattern == FACTORY_PATTERN.pattern  # (models may not import config)


def test_sweep_over_a_factory_kwarg(tmp_path):
    path = write(tmp_path, FACTORY)
    out = tmp_path / "sweep"
    res = runner.invoke(
        app, ["sweep", str(path), "--over", "model.kwargs.depth=2,4", "--workers", "1", "--out", str(out), "--allow-code"]
    )
    assert res.exit_code == 0, res.output
    g = read_run(out).grads
    assert sorted(g.groupby("depth")["layer"].max().to_dict().items()) == [(2, 1), (4, 3)]


def test_compare_a_factory_model_with_a_resflow_model(tmp_path):
    path = write(tmp_path, FACTORY)
    own = write(tmp_path, {"name": "own", "model": {"depth": 3, "width": 5}}, "own.yaml")
    res = runner.invoke(app, ["compare", str(path), str(own), "--out", str(tmp_path / "c"), "--no-plots", "--allow-code"])
    assert res.exit_code == 0, res.output
    assert set(read_run(tmp_path / "c").grads["variant"]) == {"tiny", "own"}


@pytest.mark.parametrize(
    "sets, message",
    [
        (["model.factory=no_such_module_x:f"], "model.factory: cannot import 'no_such_module_x'"),
        (["model.factory=test_factory:nothing"], "model.factory: 'test_factory' has no 'nothing'"),
        (
            ["model.factory=test_factory:broken_factory"],
            "model.kwargs: test_factory:broken_factory rejected them (ValueError: depth must be even)",
        ),
        (["model.kwargs.depht=2"], "model.kwargs: test_factory:tiny_net rejected them (TypeError: "),
        (["model.blocks=[stage*]"], "blocks: the pattern 'stage*' matches no module of Sequential"),
        (["data.shape=[4, 7]"], "the model rejected the inputs: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ],
)
def test_cli_bad_factory_input_is_one_line_exit_2(tmp_path, sets, message):
    path = write(tmp_path, FACTORY)
    out = tmp_path / "r"
    args = ["run", str(path), "--out", str(out), "--allow-code"]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_hf_gpt2_from_yaml(tmp_path):
    pytest.importorskip("transformers")
    cfg = load_config(
        {
            "name": "g",
            "model": {
                "factory": "hf:gpt2",
                "kwargs": {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 16},
            },
            "data": {"batch_size": 2, "tokens": {"vocab": 64, "seq_len": 8}},
        }
    )
    g = run(cfg).grads
    assert list(g["module"]) == ["transformer.h.0", "transformer.h.1"]
    assert (g["input_grad_norm"] > 0).all() and (g["block"] == "GPT2Block").all()


def test_hf_resnet_from_yaml_and_unknown_kwarg():
    pytest.importorskip("transformers")
    base = {
        "model": {
            "factory": "hf:resnet",
            "kwargs": {"depths": [2, 2], "hidden_sizes": [8, 16], "embedding_size": 8, "layer_type": "basic"},
        },
        "data": {"shape": [2, 3, 16, 16]},
    }
    g = run(load_config(base)).grads
    assert list(g["module"]) == [f"resnet.encoder.stages.{s}.layers.{i}" for s in (0, 1) for i in (0, 1)]
    with pytest.raises(ConfigError, match="model.kwargs: hf:resnet rejected them .*ResNetConfig has no 'depth'"):
        run(load_config(base, ["model.kwargs.depth=3"]))
