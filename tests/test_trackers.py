"""W&B and MLflow, written by resflow and read back with the trackers' own libraries: W&B's offline
run file (its protobuf records: run, config, history, summary) and MLflow's client on a SQLite
store. Every grads.csv and train.csv value is found at its step; the config columns are the params;
the summary is the run summary. Bad input is one line, exit 2, nothing written."""

import glob
import json
import math
import struct
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from clirunner import Runner
from torch import nn

import resflow
from resflow.cli.app import app
from resflow.errors import ConfigError
from resflow.results.files import read_csv
from resflow.results.tensorboard_events import MEASURES, layer_tag

runner = Runner()
TRAIN = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "train.steps=4", "--set", "train.record_every=2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "deep50-train"
    done = invoke("run", "deep50", *TRAIN, "--seeds", 2, "--no-plots", "--out", out)
    assert done.exit_code == 0, done.output
    return out


def expected(out):
    """{(variant, seed): {key: {step: value}}} from the CSVs: the per-layer keys and the losses."""
    grads, train = read_csv(out / "grads.csv"), read_csv(out / "train.csv")
    want: dict = {}
    for _, row in grads.iterrows():
        for m in MEASURES:
            if not math.isnan(row[m]):
                want.setdefault((row["variant"], int(row["seed"])), {}).setdefault(f"{m}/{layer_tag(row)}", {})[
                    int(row["step"])
                ] = row[m]
    for _, row in train.iterrows():
        for c in ("loss", "eval_loss", "grad_norm_total", "lr"):
            if not math.isnan(row[c]):
                want[(row["variant"], int(row["seed"]))].setdefault(c, {})[int(row["step"])] = row[c]
    return want


# --- W&B: the offline run file, read with W&B's own protobuf ------------------------------------


def wandb_records(path):
    """The records of a .wandb file (W&B's LevelDB-log framing: 7-byte file header, 32 KiB blocks,
    7-byte record headers, records split FIRST/MIDDLE/LAST), each parsed as W&B's Record proto."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(path):
    """(run record, config, history {key: {step: value}}, summary) of one offline run."""
    run, config, history, summary = None, {}, {}, {}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            config.update({(u.key or ".".join(u.nested_key)): json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            for key, value in items.items():
                history.setdefault(key, {})[items["_step"]] = value
        elif kind == "summary":
            summary.update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update})
    return run, config, history, summary


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    wandb.teardown()  # W&B's process-wide settings are read once: WANDB_DIR anew for each test
    yield tmp_path
    wandb.teardown()


def offline_runs(root):
    """Every offline run under root/wandb, once W&B's service has written them out (teardown waits for it)."""
    import wandb

    wandb.teardown()
    return {
        (run.display_name): (run, config, history, summary)
        for run, config, history, summary in map(wandb_run, glob.glob(str(root / "wandb" / "offline-run-*" / "*.wandb")))
    }


def test_export_to_wandb_offline_reads_back(trained, wandb_offline):
    done = invoke("export", trained, "my-project", "--to", "wandb")
    assert done.exit_code == 0, done.output
    assert "wrote 2 runs" in done.output and "my-project" in done.output
    runs = offline_runs(wandb_offline)
    assert set(runs) == {"deep50/seed_0", "deep50/seed_1"}
    summary_csv = read_csv(trained / "summary.csv")
    for (variant, seed), keys in expected(trained).items():
        run, config, history, summary = runs[f"{variant}/seed_{seed}"]
        assert run.project == "my-project" and run.run_group == variant
        for key, points in keys.items():
            assert history[key] == pytest.approx(points, rel=1e-15), key  # JSON doubles: exact
        assert config["depth"] == 3 and config["seed"] == seed and config["model"]["width"] == 8
        last = summary_csv[summary_csv["seed"] == seed].iloc[-1]
        assert summary["grad_ratio"] == pytest.approx(last["grad_ratio"], rel=1e-15)
        # one chart per quantity with a line per layer: W&B's line_series panel, its table logged
        charts = {k for k in config if k.startswith("_wandb") and "per_layer" in k}
        assert any("input_grad_norm" in k for k in charts), sorted(config)[:10]


def test_watch_log_to_wandb_live(wandb_offline):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(3)])
    losses = {}
    with resflow.watch(model, every=2, log_to="wandb:live-proj", name="tiny") as w:
        for step in range(4):
            loss = model(torch.randn(5, 4)).pow(2).mean()
            loss.backward()
            w.step(loss)
            losses[step] = loss.item()
            model.zero_grad()
    [(run, _, history, _)] = offline_runs(wandb_offline).values()
    assert run.project == "live-proj" and run.display_name == "tiny"
    g = w.grads
    for _, row in g.dropna(subset=["param_grad_norm"]).iterrows():
        assert history[f"param_grad_norm/{layer_tag(row)}"][int(row["step"])] == pytest.approx(row["param_grad_norm"], rel=1e-15)
    assert history["loss"] == pytest.approx(losses, rel=1e-6)  # every step, recorded or not


def test_wandb_refusals_are_one_line_and_write_nothing(trained, wandb_offline, monkeypatch):
    done = invoke("export", trained, "bad/name", "--to", "wandb")
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "bad/name" in done.output and "cannot contain" in done.output
    assert not (wandb_offline / "wandb").exists()
    out = wandb_offline / "r"
    done = invoke("run", "deep50", *TRAIN, "--no-plots", "--out", out, "--log-to", "wandb:no#hash")
    assert done.exit_code == 2 and done.output.count("\n") == 1 and not out.exists(), done.output
    monkeypatch.setitem(sys.modules, "wandb", None)  # the extra not installed
    done = invoke("export", trained, "--to", "wandb")
    assert done.exit_code == 2 and 'pip install "resflow[wandb]"' in done.output and done.output.count("\n") == 1
    with pytest.raises(ConfigError, match=r"resflow\[wandb\]"):
        resflow.watch(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), log_to="wandb")


# --- MLflow: a SQLite store, read with MlflowClient ----------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_export_to_mlflow_reads_back(trained, mlflow_uri):
    from mlflow import MlflowClient

    done = invoke("export", trained, mlflow_uri, "--to", "mlflow")
    assert done.exit_code == 0, done.output
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("deep50-train")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"deep50/seed_0", "deep50/seed_1"}
    meta = json.loads((trained / "meta.json").read_text())
    from datetime import datetime

    start = datetime.fromisoformat(meta["started"]).timestamp()
    train = read_csv(trained / "train.csv")
    summary_csv = read_csv(trained / "summary.csv")
    for (variant, seed), keys in expected(trained).items():
        run = runs[f"{variant}/seed_{seed}"]
        for key, points in keys.items():
            history = client.get_metric_history(run.info.run_id, key)
            assert {m.step: m.value for m in history} == pytest.approx(points, rel=1e-15), key
        # each step at its real wall time: meta.json's start plus train.csv's wall_time_s (ms)
        t = train[train["seed"] == seed].set_index("step")["wall_time_s"]
        stamps = {m.step: m.timestamp for m in client.get_metric_history(run.info.run_id, "loss")}
        assert stamps == {int(s): int(1000 * (start + w)) for s, w in t.items()}
        params = run.data.params
        assert params["depth"] == "3" and params["seed"] == str(seed) and params["model.width"] == "8"
        last = summary_csv[summary_csv["seed"] == seed].iloc[-1]
        assert run.data.metrics["summary/grad_ratio"] == pytest.approx(last["grad_ratio"], rel=1e-15)


def test_run_log_to_mlflow_live_equals_export(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    out = tmp_path / "live"
    done = invoke("run", "deep50", *TRAIN, "--seeds", 1, "--no-plots", "--out", out, "--log-to", f"mlflow:{mlflow_uri}")
    assert done.exit_code == 0, done.output
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("deep50")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "deep50/seed_0" and run.info.status == "FINISHED"
    for key, points in expected(out)[("deep50", 0)].items():
        assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} == pytest.approx(points, rel=1e-15)


def test_mlflow_refusals_are_one_line(trained, tmp_path):
    pytest.importorskip("mlflow")
    done = invoke("export", trained, "http://127.0.0.1:9", "--to", "mlflow")  # nothing listens on port 9
    assert done.exit_code == 2 and done.output.count("\n") == 1 and "unreachable" in done.output, done.output
    out = tmp_path / "r"
    done = invoke("run", "deep50", *TRAIN, "--no-plots", "--out", out, "--log-to", "mlflow:http://127.0.0.1:9")
    assert done.exit_code == 2 and done.output.count("\n") == 1 and not out.exists(), done.output
    done = invoke("run", "deep50", *TRAIN, "--no-plots", "--out", out, "--log-to", "comet:x")
    assert done.exit_code == 2 and "unknown tracker" in done.output and not out.exists()


def test_trackers_import_nothing_unless_used():
    import subprocess

    code = "import resflow, resflow.results.sinks, resflow.anymodel, sys; print(sorted({'wandb','mlflow','tensorboard'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_values_are_floats_not_numpy(trained):
    """pandas' numpy scalars become plain floats before a tracker sees them (W&B would log a numpy
    float64 as a number, MLflow insists on float): the replay's rows."""
    from resflow.report.export.runs import replay, runs, started
    from resflow.results.files import read_run

    seen = []

    class Recorder:
        def log(self, step, rows=(), scalars=None, wall_time=None):
            seen.append((step, list(rows), scalars))

        def close(self, summary=None):
            seen.append(summary)

    result = read_run(trained)
    run = next(runs(result))
    replay(run, Recorder(), started(result))
    steps = [s[0] for s in seen[:-1]]
    assert steps == sorted(set(read_csv(trained / "train.csv")["step"]))
    assert all(isinstance(v, float) for s in seen[:-1] if s[2] for v in s[2].values() if v is not None)
    assert np.isclose(seen[-1]["grad_ratio"], pd.read_csv(trained / "summary.csv").query("seed == 0")["grad_ratio"].iloc[-1])
