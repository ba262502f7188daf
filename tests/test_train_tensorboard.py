"""`resflow run CONFIG --tensorboard LOGDIR` logs a training run live: every recorded step's per-layer
norms and loss, read back with TensorBoard's own reader, equal grads.csv and train.csv."""

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from resflow.cli.app import app  # noqa: E402
from resflow.results.tensorboard_events import layer_tag  # noqa: E402

ARGS = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "train.steps=6", "--set", "train.record_every=2"]


def test_a_training_run_logs_every_recorded_step_live(tmp_path):
    out, logdir = tmp_path / "r", tmp_path / "tb"
    done = CliRunner().invoke(
        app, ["run", "train50-residual", *ARGS, "--seeds", "2", "--no-plots", "--out", str(out), "--tensorboard", str(logdir)]
    )
    assert done.exit_code == 0, done.output
    grads, train = pd.read_csv(out / "grads.csv"), pd.read_csv(out / "train.csv")
    name = grads["variant"].iloc[0]
    for seed in (0, 1):
        acc = EventAccumulator(str(logdir / name / f"seed_{seed}"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        g = grads[grads["seed"] == seed]
        recorded = sorted(g["step"].unique())
        assert recorded == [0, 2, 4, 6]
        for _, row in g.iterrows():
            for column in ("input_grad_norm", "activation_rms", "param_grad_norm"):
                if math.isnan(row[column]):
                    continue
                points = {e.step: e.value for e in acc.Scalars(f"{column}/{layer_tag(row)}")}
                assert sorted(points) == recorded
                assert points[row["step"]] == np.float32(row[column])
        losses = {e.step: e.value for e in acc.Scalars("loss")}
        assert "loss" in tags and sorted(losses) == recorded
        t = train[train["seed"] == seed].set_index("step")["loss"]
        assert all(losses[s] == np.float32(t[s]) for s in recorded)


def test_tensorboard_is_refused_for_a_run_at_initialisation(tmp_path):
    done = CliRunner().invoke(
        app, ["run", "deep50", "--set", "model.depth=2", "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb")]
    )
    assert done.exit_code == 2 and "training run" in done.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "tb").exists()
