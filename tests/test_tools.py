"""Fitting the lab's tools: Parquet equal to CSV, notebook display, shell completion, the local pool's
start method in threaded processes."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from clirunner import Runner

from resflow import load_config, run
from resflow.cli.app import app
from resflow.results.files import read_csv, read_run, write_run

pytestmark = pytest.mark.smoke
runner = Runner()
SMALL = ["--set", "model.depth=6", "--set", "model.width=8", "--set", "data.batch_size=4"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _frames(result):
    return {name: getattr(result, name) for name in ("grads", "params", "summary", "train")}


def assert_same_tables(a, b):
    for name, x in _frames(a).items():
        y = getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        pd.testing.assert_frame_equal(x, y, check_exact=True, obj=name)


# ---------------------------------------------------------------------------------------------
# Parquet


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.depth=5", "seeds=2"],  # an MLP at initialisation
        ["model.depth=4", "seeds=2", "train.steps=3"],  # training: train.csv, per-step rows
    ],
)
def test_parquet_round_trip_equals_csv(tmp_path, overrides):
    """The Parquet tables read back as exactly the frames the CSVs read back as (values and dtypes)."""
    pytest.importorskip("pyarrow")
    result = run(load_config("deep50", overrides))
    write_run(result, tmp_path / "csv")
    write_run(result, tmp_path / "pq", fmt="parquet")
    assert not list((tmp_path / "pq").glob("*.csv")) and (tmp_path / "pq" / "grads.parquet").is_file()
    from_csv, from_parquet = read_run(tmp_path / "csv"), read_run(tmp_path / "pq")
    assert_same_tables(from_csv, from_parquet)
    # and the CSV itself holds the computed floats exactly (the reference both are checked against)
    assert np.array_equal(from_csv.grads["input_grad_norm"].to_numpy(), result.grads["input_grad_norm"].to_numpy())


def test_parquet_keeps_text_and_missing_values_as_the_csv_does(tmp_path):
    """A transformer run (sublayer names, None in columns) and a column mixing numbers and text."""
    pytest.importorskip("pyarrow")
    result = run(load_config("pre-norm", ["model.depth=2", "seeds=1"]))
    result.summary["residual_scale"] = ["deepnorm"] * (len(result.summary) - 1) + [0.5]  # mixed: text in the CSV
    write_run(result, tmp_path / "both", fmt="both")
    csv_only = read_run(tmp_path / "both")  # reads Parquet when there is both...
    (tmp_path / "both" / "summary.parquet").unlink()
    (tmp_path / "both" / "grads.parquet").unlink()
    assert_same_tables(read_run(tmp_path / "both"), csv_only)  # ...equal to the CSVs


def test_cli_format_parquet_show_plot_and_force(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "r"
    result = invoke("run", "deep50", "--out", out, "--seeds", 2, "--format", "parquet", *SMALL)
    assert result.exit_code == 0, result.output
    assert "grads.parquet" in result.output and "grads.csv" not in result.output
    assert sorted(p.name for p in out.glob("*.parquet")) == ["grads.parquet", "params.parquet", "summary.parquet"]
    assert invoke("show", out).exit_code == 0
    assert invoke("plot", out, "--format", "svg").exit_code == 0 and (out / "profile.svg").is_file()
    again = invoke("run", "deep50", "--out", out, "--seeds", 2, "--format", "both", "--force", *SMALL)
    assert again.exit_code == 0, again.output  # a dir of Parquet tables is resflow's own: --force replaces it
    assert (out / "grads.csv").is_file() and (out / "grads.parquet").is_file()


def test_sweep_parquet_and_resume(tmp_path):
    pytest.importorskip("pyarrow")
    args = [
        "sweep",
        "deep50",
        "--over",
        "model.residual=false,true",
        "--workers",
        1,
        "--no-plots",
        *SMALL,
        "--set",
        "model.depth=4",
        "--seeds",
        1,
    ]
    assert invoke(*args, "--out", tmp_path / "c").exit_code == 0
    result = invoke(*args, "--out", tmp_path / "p", "--format", "parquet")
    assert result.exit_code == 0, result.output
    assert_same_tables(read_run(tmp_path / "c"), read_run(tmp_path / "p"))
    # an unfinished Parquet sweep resumes from its point files
    (tmp_path / "p" / "summary.parquet").unlink()
    (tmp_path / "p" / "grads.parquet").unlink()
    result = invoke(*args, "--out", tmp_path / "p", "--format", "parquet", "--resume")
    assert result.exit_code == 0, result.output
    assert_same_tables(read_run(tmp_path / "c"), read_run(tmp_path / "p"))


def test_format_refused_up_front(tmp_path, monkeypatch):
    result = invoke("run", "deep50", "--out", tmp_path / "r", "--format", "xlsx", *SMALL)
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    result = invoke("run", "deep50", "--out", tmp_path / "r", "--format", "parquet", *SMALL)
    assert result.exit_code == 2 and "pip install" in result.stderr and not (tmp_path / "r").exists()


def test_read_csv_is_exact():
    """Every float back exactly (pandas < 3 parses about a third of them one ulp off by default)."""
    import io

    x = np.random.default_rng(0).lognormal(0, 20, 5000)
    back = read_csv(io.StringIO(pd.DataFrame({"a": x}).to_csv(index=False)))["a"].to_numpy()
    assert np.array_equal(back, x)


# ---------------------------------------------------------------------------------------------
# Notebooks, completion


def test_run_result_repr_and_html():
    result = run(load_config("deep50", ["model.depth=5", "seeds=3"]))
    text = repr(result)
    assert text.startswith("<RunResult: resflow run>") and "seeds" in text and "3" in text
    layers = result.grads["layer"]
    assert f"grads {len(result.grads):,}" in text and re.search(rf"layers +{layers.min()}-{layers.max()}\n", text)
    ratio = result.summary["grad_ratio"].median()
    assert f"{ratio:.3g}x" in text
    html = result._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "deep50" in html
    assert len(text) < 1000  # not the DataFrames' full dump


def test_figures_display_inline_as_png():
    from resflow.report.figures.plots import figures

    result = run(load_config("deep50", ["model.depth=5", "seeds=2"]))
    png = figures(result)["profile"]._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_shell_completion_is_offered():
    result = invoke("--help")
    assert result.exit_code == 0 and "--install-completion" in result.output and "--show-completion" in result.output


# ---------------------------------------------------------------------------------------------
# The local pool's start method


def test_start_method_is_fork_only_without_other_threads(tmp_path):
    """In a fresh process (a test worker may hold other tests' threads: trackers', TensorBoard's)."""
    code = """
import os, threading, pytest
from resflow.executors import pool as backends
os.environ.pop("RESFLOW_START_METHOD", None)
assert threading.active_count() == 1 and backends.start_method() == "fork"
stop = threading.Event()
thread = threading.Thread(target=stop.wait, daemon=True)
thread.start()
assert backends.start_method() == "forkserver"
stop.set(); thread.join()
os.environ["RESFLOW_START_METHOD"] = "spawn"
assert backends.start_method() == "spawn"
os.environ["RESFLOW_START_METHOD"] = "vfork"
with pytest.raises(Exception, match="RESFLOW_START_METHOD"):
    backends.start_method()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


THREADED_SWEEP = """
import threading, sys
from pathlib import Path
threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a Jupyter kernel has
if __name__ == "__main__":
    from resflow.executors import pool as backends
    from resflow.sweep import load_base, make_plan, run_sweep
    assert backends.start_method() == "forkserver"
    base, axes = load_base("deep50", ["seeds=2", "model.depth=4", "model.width=8"])
    plan = make_plan(base, axes, ["model.residual=false,true"])
    run_sweep(plan, Path(sys.argv[1]) / "pool", workers=2)
    run_sweep(plan, Path(sys.argv[1]) / "one", workers=1)
"""


def test_sweep_from_a_threaded_process_uses_forkserver_and_same_bytes(tmp_path, cli_env):
    cli_env.pop("RESFLOW_START_METHOD", None)
    proc = subprocess.run(
        [sys.executable, "-c", THREADED_SWEEP, str(tmp_path)], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("grads.csv", "params.csv", "summary.csv"):
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
