"""Training mode: learning on an easy task, bit-for-bit determinism, update ratios against closed forms
and independent recomputation, the schema of train.csv/params.csv, steps: 0 unchanged, bad settings."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.measure.data import data_generator
from resflow.models import build_model
from resflow.results.files import read_run, write_run
from resflow.results.tables import PARAMS_COLUMNS, TRAIN_COLUMNS
from resflow.train.loop import record_steps, warmup_factor
from resflow.train.tasks import TeacherTask

runner = CliRunner()


def small(*overrides, **kw):
    base = dict(
        name="t",
        seed=3,
        seeds=1,
        dtype="float64",
        model=dict(depth=2, width=8, activation="tanh", residual=True),
        data=dict(batch_size=16),
        train=dict(steps=20, lr=1e-2, eval_batches=2),
    )
    base.update(kw)
    return load_config(base, list(overrides))


def test_loss_decreases_on_easy_task():
    cfg = small("train.steps=200", "train.record_every=50", "model.width=4", "train.lr=0.03")
    tr = run(cfg).train
    ev = tr["eval_loss"].dropna()
    # the teacher's outputs have unit variance: a constant scores ~1; learning must cut that well down
    assert ev.iloc[0] > 0.5
    assert ev.iloc[-1] < 0.5 * ev.iloc[0], ev.tolist()
    assert tr["loss"].tail(20).mean() < 0.5 * tr["loss"].head(20).mean()


def test_bit_for_bit_deterministic():
    cfg = small("seeds=2", "dtype=float32", "train.record_every=5")
    a, b = run(cfg), run(cfg)
    pd.testing.assert_frame_equal(a.train.drop(columns="wall_time_s"), b.train.drop(columns="wall_time_s"), check_exact=True)
    pd.testing.assert_frame_equal(a.grads, b.grads, check_exact=True)
    pd.testing.assert_frame_equal(a.params, b.params, check_exact=True)
    # different seeds really differ (the data and the init are drawn per seed)
    s0, s1 = (a.train[a.train["seed"] == s]["loss"].to_numpy() for s in (3, 4))
    assert not np.array_equal(s0, s1)


def test_sgd_update_ratio_is_lr_times_grad_over_weight():
    # plain SGD: W_{s+1} - W_s = -lr * g_s exactly, so ||dW||/||W|| = lr * grad_norm / value_norm (same row)
    lr = 0.05
    p = run(small("train.optimizer=sgd", f"train.lr={lr}", "train.record_every=4")).params
    p = p[p["update_ratio"].notna()]
    assert len(p) > 0
    expected = lr * p["grad_norm"] / p["value_norm"]
    np.testing.assert_allclose(p["update_ratio"], expected, rtol=1e-9)


def test_adam_first_step_is_lr_times_sign():
    # Adam's first update is lr * g / (|g| + eps) elementwise = lr * sign(g) when |g| >> eps
    lr = 1e-3
    p = run(small(f"train.lr={lr}", "train.record_every=1")).params
    first = p[(p["step"] == 0) & (p["param"] == "linear.weight")]
    numel = 8 * 8
    np.testing.assert_allclose(first["update_ratio"], lr * math.sqrt(numel) / first["value_norm"], rtol=1e-4)


def test_update_ratio_and_movement_match_an_independent_replay():
    """Replay the run by hand (same seed, same batches, torch.optim.AdamW directly), snapshot the weights."""
    cfg = small("train.optimizer=adamw", "train.weight_decay=0.1", "train.warmup=5", "train.record_every=3")
    p = run(cfg).params
    torch.manual_seed(3)
    model = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(3)
    task = TeacherTask(cfg, gen, torch.device("cpu"), torch.float64)
    for _ in range(cfg.train.eval_batches):
        task.batch(gen, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=0.1)
    w0 = model.blocks[0].linear.weight.detach().clone()
    for step in range(cfg.train.steps):
        x, y = task.batch(gen, 16)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        before = model.blocks[0].linear.weight.detach().clone()
        for g in opt.param_groups:
            g["lr"] = cfg.train.lr * min(1.0, (step + 1) / 5)
        opt.step()
        after = model.blocks[0].linear.weight.detach()
        row = p[(p["step"] == step) & (p["layer"] == 0) & (p["param"] == "linear.weight")]
        if step % 3 == 0:
            assert row["update_ratio"].item() == pytest.approx(((after - before).norm() / before.norm()).item(), rel=1e-9)
            assert row["movement"].item() == pytest.approx((before - w0).norm().item(), rel=1e-9, abs=1e-15)
        else:
            assert row.empty
    last = p[(p["step"] == cfg.train.steps) & (p["layer"] == 0) & (p["param"] == "linear.weight")]
    assert math.isnan(last["update_ratio"].item())  # no update follows the last step
    assert last["movement"].item() == pytest.approx((model.blocks[0].linear.weight.detach() - w0).norm().item(), rel=1e-9)


def test_schema_steps_and_roundtrip(tmp_path):
    cfg = small("seeds=2", "train.steps=10", "train.record_every=4")
    result = run(cfg)
    assert record_steps(10, 4) == [0, 4, 8, 10]
    assert sorted(result.grads["step"].unique()) == [0, 4, 8, 10]
    assert list(result.train.columns[: len(TRAIN_COLUMNS)]) == TRAIN_COLUMNS
    assert len(result.train) == 2 * 11  # steps 0..10 for each seed
    assert result.train["eval_loss"].notna().sum() == 2 * 4
    assert list(result.params.columns) == PARAMS_COLUMNS + ["update_ratio", "movement"]
    assert len(result.summary) == 2 * 4  # one summary row per (seed, recorded step)
    write_run(result, tmp_path / "r")
    back = read_run(tmp_path / "r")
    pd.testing.assert_frame_equal(back.train, result.train, check_exact=True, check_dtype=False)


def test_warmup_schedule():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    tr = run(small("train.warmup=4", "train.lr=0.1", "train.steps=6")).train
    np.testing.assert_allclose(tr["lr"].iloc[:6], [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert math.isnan(tr["lr"].iloc[6])


def test_steps_zero_is_measurement_at_init(tmp_path):
    cfg = small("train.steps=0", "train.optimizer=sgd")
    plain = load_config({k: v for k, v in small().to_dict().items() if k != "train"})
    a, b = run(cfg), run(plain)
    assert a.train is None and "train" not in cfg.to_dict()
    pd.testing.assert_frame_equal(a.grads, b.grads, check_exact=True)
    assert list(a.params.columns) == PARAMS_COLUMNS
    write_run(a, tmp_path / "r")
    assert not (tmp_path / "r" / "train.csv").exists()


def test_cli_training_plain_lines_and_tables(tmp_path):
    out = tmp_path / "r"
    args = [
        "run",
        "deep50",
        "--out",
        str(out),
        "--set",
        "model.depth=4",
        "--set",
        "model.width=8",
        "--set",
        "train.steps=10",
        "--set",
        "train.record_every=5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("deep50 seed 0 step")]
    assert [line.split()[4] for line in lines] == ["0/10", "5/10", "10/10"]  # not a TTY: recorded steps only
    assert "loss start" in result.output and "moved" in result.output and "eval loss" in result.output
    assert (out / "train.csv").is_file()


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("train.steps=-1", "train.steps"),
        ("train.lr=0", "train.lr"),
        ("train.optimizer=sgdd", "train.optimizer"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.record_every=0", "train.record_every"),
        ("train.warmup=50", "train.warmup: must be at most train.steps (10)"),
        ("train.task=nope", "train.task"),
        ("train.stepz=3", "did you mean 'train.steps'"),
    ],
)
def test_bad_train_settings_are_one_line_errors(tmp_path, setting, needle):
    result = runner.invoke(app, ["run", "deep50", "--out", str(tmp_path / "r"), "--set", "train.steps=10", "--set", setting])
    assert result.exit_code == 2
    err = result.stderr.strip() if hasattr(result, "stderr") and result.stderr else result.output.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_training_run_gets_loss_and_step_figures():
    from resflow.report.figures.plots import figures

    result = run(small("seeds=2", "train.steps=8", "train.record_every=4"))
    figs = figures(result)
    assert {"loss", "steps", "profile"} <= set(figs)
    ydata = [ln.get_ydata() for ln in figs["loss"].axes[0].get_lines()]
    expected = result.train.groupby("step")["loss"].median().to_numpy()
    assert any(len(y) == len(expected) and np.allclose(y, expected) for y in ydata)
