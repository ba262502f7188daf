"""`resflow export DIR --to tensorboard`: the event files read back with TensorBoard's own reader
(EventAccumulator) hold the values of the results dir's CSVs (as float32, TensorBoard's scalars)."""

import numpy as np
import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.results.files import read_csv

pytestmark = pytest.mark.smoke
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

runner = Runner()
SMALL = ["--set", "model.width=8", "--set", "data.batch_size=4", "--no-plots"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def events(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def layer_tag(layer, sublayer):
    sub = "" if not isinstance(sublayer, str) or sublayer in ("", "mlp") else f"/{sublayer}"
    return f"layer_{int(layer):03d}{sub}"


def check_against_csv(results, logdir, column="input_grad_norm"):
    """Every grads.csv row's value is the event at (run variant/seed_n, tag column/layer_k, step)."""
    grads = read_csv(results / "grads.csv")
    checked = 0
    for (variant, seed), rows in grads.groupby(["variant", "seed"], sort=False):
        acc = events(logdir / variant / f"seed_{seed}")
        for _, row in rows.iterrows():
            got = {e.step: e.value for e in acc.Scalars(f"{column}/{layer_tag(row['layer'], row['sublayer'])}")}
            assert got[int(row["step"])] == np.float32(row[column]), (variant, seed, row["layer"], row["step"])
            checked += 1
    return checked


def test_export_training_run(tmp_path):
    out, logdir = tmp_path / "train", tmp_path / "tb"
    assert (
        invoke(
            "run",
            "deep50",
            "--out",
            out,
            "--seeds",
            2,
            "--set",
            "model.depth=3",
            "--set",
            "train.steps=4",
            "--set",
            "train.record_every=2",
            *SMALL,
        ).exit_code
        == 0
    )
    result = invoke("export", out, logdir, "--to", "tensorboard")
    assert result.exit_code == 0, result.output
    assert f"to {logdir}/" in result.output and "tensorboard --logdir" in result.output
    assert check_against_csv(out, logdir) == len(read_csv(out / "grads.csv"))
    assert check_against_csv(out, logdir, "param_grad_norm") > 0
    # loss curves: every train.csv row, by step
    train = read_csv(out / "train.csv")
    for (variant, seed), rows in train.groupby(["variant", "seed"]):
        acc = events(logdir / variant / f"seed_{seed}")
        loss = {e.step: e.value for e in acc.Scalars("loss")}
        assert loss == {int(s): np.float32(v) for s, v in zip(rows["step"], rows["loss"])}
        evals = rows.dropna(subset=["eval_loss"])
        assert {e.step: e.value for e in acc.Scalars("eval_loss")} == {
            int(s): np.float32(v) for s, v in zip(evals["step"], evals["eval_loss"])
        }
        # one histogram per step: the log10 of every layer's norm at that step
        grads = read_csv(out / "grads.csv")
        mine = grads[(grads["variant"] == variant) & (grads["seed"] == seed)]
        hists = acc.Histograms("log10_input_grad_norm")
        assert [h.step for h in hists] == sorted(mine["step"].unique())
        for h in hists:
            logs = np.log10(mine.loc[mine["step"] == h.step, "input_grad_norm"].to_numpy())
            assert h.histogram_value.num == len(logs)
            assert h.histogram_value.min == pytest.approx(logs.min()) and h.histogram_value.max == pytest.approx(logs.max())
        # the config as text, the hparams session
        text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
        assert '"depth": 3' in text
        assert "_hparams_/session_start_info" in acc.Tags()["tensors"] or acc.SummaryMetadata("_hparams_/session_start_info")
        # real wall times: meta.json's start plus train.csv's wall_time_s (not one time for every event)
        import json
        from datetime import datetime

        start = datetime.fromisoformat(json.loads((out / "meta.json").read_text())["started"]).timestamp()
        walls = {e.step: e.wall_time for e in acc.Scalars("loss")}
        assert walls == pytest.approx({int(s): start + w for s, w in zip(rows["step"], rows["wall_time_s"])}, abs=1e-6)
        assert len(set(walls.values())) == len(walls)
        # the custom-scalars layout: one chart per quantity overlaying every layer (a tag regex)
        from tensorboard.plugins.custom_scalar import layout_pb2

        layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
        charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
        assert charts["input_grad_norm"] == ["^input_grad_norm/layer_"]
        import re

        tags = acc.Tags()["scalars"]
        assert sorted(t for t in tags if re.search(charts["input_grad_norm"][0], t)) == [
            f"input_grad_norm/layer_{i:03d}" for i in range(3)
        ]


def test_export_sweep_profile_and_summary(tmp_path):
    out, logdir = tmp_path / "sweep", tmp_path / "tb"
    assert (
        invoke(
            "sweep",
            "deep50",
            "--over",
            "model.residual=false,true",
            "--set",
            "model.depth=4",
            "--seeds",
            1,
            "--workers",
            1,
            "--out",
            out,
            *SMALL,
        ).exit_code
        == 0
    )
    assert invoke("export", out, logdir, "--to", "tensorboard").exit_code == 0
    assert check_against_csv(out, logdir) == len(read_csv(out / "grads.csv"))
    grads, summary = read_csv(out / "grads.csv"), read_csv(out / "summary.csv")
    for variant in grads["variant"].unique():
        acc = events(logdir / variant / "seed_0")
        mine = grads[grads["variant"] == variant]
        profile = [(e.step, e.value) for e in sorted(acc.Scalars("profile/log10_input_grad_norm"), key=lambda e: e.step)]
        # x = the site index in the CSV's row order, y = log10 of the norm (a vanishing profile reads as a slope, not 0)
        assert profile == [(i, np.float32(np.log10(v))) for i, v in enumerate(mine["input_grad_norm"])]
        ratio = summary.loc[summary["variant"] == variant, "grad_ratio"].iloc[0]
        assert acc.Scalars("summary/grad_ratio")[0].value == np.float32(ratio)


def test_export_compare_parquet_and_refusals(tmp_path):
    pytest.importorskip("pyarrow")
    out, logdir = tmp_path / "cmp", tmp_path / "tb"
    assert (
        invoke(
            "compare",
            "deep50",
            "deep50-residual",
            "--set",
            "model.depth=3",
            "--seeds",
            1,
            "--workers",
            1,
            "--format",
            "parquet",
            "--out",
            out,
            *SMALL,
        ).exit_code
        == 0
    )
    assert invoke("export", out, logdir, "--to", "tensorboard").exit_code == 0
    assert sorted(p.name for p in logdir.iterdir()) == [".resflow-export.json", "deep50", "deep50-residual"]
    again = invoke("export", out, logdir, "--to", "tensorboard")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("export", out, logdir, "--to", "tensorboard", "--force").exit_code == 0
    assert len(list(logdir.rglob("events.out.tfevents.*"))) == 2  # replaced, not appended
    (logdir / "notes.txt").write_text("mine")
    foreign = invoke("export", out, logdir, "--to", "tensorboard", "--force")
    assert foreign.exit_code == 2 and "notes.txt" in foreign.stderr and (logdir / "notes.txt").is_file()
    assert invoke("export", out, tmp_path / "x", "--to", "wandb").exit_code == 2
    missing = invoke("export", tmp_path / "nope", tmp_path / "y", "--to", "tensorboard")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr and not (tmp_path / "y").exists()


def test_sweep_tensorboard_writes_what_export_writes(tmp_path):
    out, live, exported = tmp_path / "sweep", tmp_path / "live", tmp_path / "exported"
    args = ["sweep", "deep50", "--over", "model.residual=false,true", "--set", "model.depth=3", "--seeds", 1, "--workers", 1]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    refused = invoke(*args, "--out", tmp_path / "no", *SMALL, "--tensorboard", tmp_path / "taken")
    assert refused.exit_code == 2 and "--tensorboard" in refused.output and not (tmp_path / "no").exists()
    done = invoke(*args, "--out", out, *SMALL, "--tensorboard", live)
    assert done.exit_code == 0, done.output
    assert invoke("export", out, exported, "--to", "tensorboard").exit_code == 0
    runs = sorted(p.parent.relative_to(live) for p in live.rglob("events.out.tfevents.*"))
    assert len(runs) == 2 and runs == sorted(p.parent.relative_to(exported) for p in exported.rglob("events.out.tfevents.*"))
    for run in runs:
        a, b = events(live / run), events(exported / run)
        assert sorted(a.Tags()["scalars"]) == sorted(b.Tags()["scalars"])
        for tag in a.Tags()["scalars"]:
            assert [(e.step, e.value) for e in a.Scalars(tag)] == [(e.step, e.value) for e in b.Scalars(tag)]
    assert check_against_csv(out, live) == len(read_csv(out / "grads.csv"))
