"""`resflow run CONFIG --tensorboard LOGDIR` logs a training run live: every recorded step's per-layer
norms and loss, read back with TensorBoard's own reader, equal grads.csv and train.csv."""

import math

import numpy as np
import pandas as pd
import pytest

from resflow import quantities

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
        t = train[train["seed"] == seed]
        for column in ("loss", "grad_norm_total", "lr", "eval_loss"):  # every train.csv value, every step it has one
            assert column in tags
            want = {int(s): np.float32(v) for s, v in zip(t["step"], t[column]) if not math.isnan(v)}
            assert {e.step: e.value for e in acc.Scalars(column)} == want, column
        assert len(acc.Scalars("loss")) == 7  # steps 0..6, not only the recorded ones


def test_live_logdir_holds_what_export_writes(tmp_path):
    """`run --tensorboard` and `export --to tensorboard` of the same run: the same tags, the same
    (step, value) points, the same config text, HParams session and layout (wall times differ)."""
    out, live, exported = tmp_path / "r", tmp_path / "live", tmp_path / "exported"
    args = ["run", "train50-residual", *ARGS, "--seeds", "1", "--no-plots", "--out", str(out), "--tensorboard", str(live)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, ["export", str(out), str(exported), "--to", "tensorboard"]).exit_code == 0
    name = pd.read_csv(out / "grads.csv")["variant"].iloc[0]
    a, b = (
        EventAccumulator(str(d / name / "seed_0"), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
        for d in (live, exported)
    )
    a.Reload()
    b.Reload()
    assert a.Tags()["scalars"] and sorted(a.Tags()["scalars"]) == sorted(b.Tags()["scalars"])
    for tag in a.Tags()["scalars"]:
        assert [(e.step, e.value) for e in a.Scalars(tag)] == [(e.step, e.value) for e in b.Scalars(tag)], tag
    assert [h.step for h in a.Histograms("log10_input_grad_norm")] == [h.step for h in b.Histograms("log10_input_grad_norm")]
    for tag in ("config", "custom_scalars__config__"):
        assert a.Tensors(tag)[0].tensor_proto == b.Tensors(tag)[0].tensor_proto, tag
    from tensorboard.plugins.hparams import metadata

    def hparams(acc):
        experiment = metadata.parse_experiment_plugin_data(acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
        start = metadata.parse_session_start_info_plugin_data(
            acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        )
        experiment.ClearField("time_created_secs")
        start.ClearField("start_time_secs")
        return experiment, start

    assert hparams(a) == hparams(b)
    experiment, start = hparams(a)
    # hyperparameters: the config columns (and the seed); metrics: the summary figures alone
    config_cols = [c for c in pd.read_csv(out / "grads.csv").columns[8:] if c not in quantities.GRADS]  # (appended quantities)
    assert [h.name for h in experiment.hparam_infos] == [*config_cols, "seed"]
    assert [m.name.tag for m in experiment.metric_infos] == [
        "summary/grad_ratio",
        "summary/log10_grad_ratio",
        "summary/gain_per_layer",
    ]
    assert start.hparams["depth"].number_value == 3 and start.hparams["residual"].bool_value is True
