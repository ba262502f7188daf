"""grad_to_weight (resflow/quantities/grad_to_weight.py): ||dloss/dtheta_l|| / ||theta_l|| per block,
against torch norms of the block's parameters and their .grad, through every place it shows."""

import math

import pytest
import torch
from clirunner import Runner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.experiment import measure_seed, run
from resflow.measure.batched import measure_seeds
from resflow.models import build_model


def small(seeds=1, **model):
    base = dict(depth=5, width=6, activation="tanh", norm="pre")
    base.update(model)
    return load_config(dict(name="g2w", dtype="float64", seeds=seeds, data=dict(batch_size=3), model=base))


def torch_ratio(model) -> list[float]:
    """Per block, sqrt(sum ||p.grad||^2) / sqrt(sum ||p||^2) over its parameters, straight from torch."""
    out = []
    for block in model.blocks:
        ps = list(block.parameters())
        grad = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in ps))
        value = torch.sqrt(sum(p.detach().double().pow(2).sum() for p in ps))
        out.append((grad / value).item())
    return out


@pytest.mark.parametrize("residual", [False, True])
def test_grad_to_weight_equals_torch_norms_of_the_blocks_parameters(residual):
    from resflow.measure.data import data_generator, make_input, make_loss
    from resflow.measure.device import input_shape
    from resflow.measure.recorder import Recorder

    cfg = small(residual=residual)
    torch.manual_seed(0)
    model = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(0)
    x = make_input(cfg.data, input_shape(cfg), gen).requires_grad_(True)
    loss_fn = make_loss(cfg.loss, tuple(x.shape), gen, "cpu", torch.float64)
    with Recorder(model) as rec:
        loss_fn(model(x)).backward()
        record = rec.collect()
    assert record.values("grad_to_weight") == pytest.approx(torch_ratio(model), rel=1e-12)


def test_batched_seeds_give_the_sequential_values():
    cfg = small(seeds=3)
    batched = measure_seeds(cfg, [0, 1, 2], torch.device("cpu"), torch.float64)
    for seed, rec in zip([0, 1, 2], batched):
        one = measure_seed(cfg, seed, torch.device("cpu"))
        assert rec.values("grad_to_weight") == pytest.approx(one.values("grad_to_weight"), rel=1e-12)
        assert all(v > 0 and math.isfinite(v) for v in one.values("grad_to_weight"))


def test_in_grads_csv_show_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small(seeds=2)
    result = run(cfg)
    g = result.grads
    assert list(g.columns)[-1] == "grad_to_weight"  # appended: every older column keeps its place
    # against params.csv: per (seed, layer), sqrt(sum grad_norm^2) / sqrt(sum value_norm^2)
    p = result.params.assign(g2=result.params["grad_norm"] ** 2, v2=result.params["value_norm"] ** 2)
    per_block = p.groupby(["seed", "layer"])[["g2", "v2"]].sum()
    expected = (per_block["g2"] ** 0.5 / per_block["v2"] ** 0.5).rename("expected").reset_index()
    both = g.merge(expected, on=["seed", "layer"])
    assert len(both) == len(g) and both["grad_to_weight"].to_numpy() == pytest.approx(both["expected"].to_numpy(), rel=1e-12)
    from resflow.results.files import write_run

    out = write_run(result, tmp_path / "r")
    shown = Runner().invoke(app, ["show", str(out), "--measure", "grad_to_weight"])
    assert shown.exit_code == 0, shown.output
    assert "‖∂loss/∂θ‖/‖θ‖" in shown.stdout
    from resflow.report.terminal.run import fmt

    median0 = float(g[g["layer"] == 0]["grad_to_weight"].median())
    assert fmt(median0) in shown.stdout
    logdir = tmp_path / "tb"
    done = Runner().invoke(app, ["export", str(out), str(logdir), "--to", "tensorboard"])
    assert done.exit_code == 0, done.output
    tags = set()
    for events in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert any(t.startswith("grad_to_weight/layer_") for t in tags)


def test_unknown_measure_is_one_line(tmp_path):
    from resflow.results.files import write_run

    out = write_run(run(small()), tmp_path / "r")
    bad = Runner().invoke(app, ["show", str(out), "--measure", "grad_to_wieght"])
    assert bad.exit_code != 0
    assert "unknown quantity 'grad_to_wieght'" in bad.output and "Traceback" not in bad.output
