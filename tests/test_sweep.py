"""resflow sweep: axes and grid expansion, bit-identical results across workers/backends, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.sweep.plan import default_depths, load_base, make_plan, parse_over, short_key
from resflow.sweep.runner import run_point

runner = CliRunner()
SMALL = ["--set", "model.width=8", "--set", "data.batch_size=4", "--seeds", "2"]
CSVS = ("grads.csv", "params.csv", "summary.csv")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------
# axes


@pytest.mark.parametrize(
    "item, key, values",
    [
        ("model.depth=1,2,5", "model.depth", [1, 2, 5]),
        ("model.residual=false,true", "model.residual", [False, True]),
        ("model.init.scale=[0.5, 1e-3]", "model.init.scale", [0.5, 0.001]),
        ("model.activation= tanh , relu", "model.activation", ["tanh", "relu"]),
    ],
    ids=["ints", "bools", "yaml-list", "strings"],
)
def test_parse_over(item, key, values):
    assert parse_over(item) == (key, values)


def test_default_depths():
    assert default_depths(50) == [1, 2, 4, 8, 16, 32, 50]
    assert default_depths(8) == [1, 2, 4, 8]
    assert default_depths(1) == [1]


def test_short_keys_match_the_config_columns():
    assert [short_key(k) for k in ("model.depth", "model.init.scale", "data.batch_size", "seed")] == [
        "depth",
        "init_scale",
        "batch_size",
        "seed",
    ]


def test_yaml_axes_merge_with_command_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: grid\nmodel: {depth: 3, width: 8}\nsweep: {model.depth: [1, 3], model.residual: [false, true]}\n")
    base, yaml_items = load_base(path)
    plan = make_plan(base, yaml_items, ["model.residual=true", "model.init.scale=0.5,1"])
    # YAML order kept; the command line replaced model.residual and added model.init.scale
    assert [(a.key, a.values) for a in plan.axes] == [
        ("model.depth", (1, 3)),
        ("model.residual", (True,)),
        ("model.init.scale", (0.5, 1.0)),
    ]
    assert [p.variant for p in plan.points] == [
        "grid[depth=1,residual=true,init_scale=0.5]",
        "grid[depth=1,residual=true,init_scale=1]",
        "grid[depth=3,residual=true,init_scale=0.5]",
        "grid[depth=3,residual=true,init_scale=1]",
    ]
    # each point's config is the base with its overrides applied, recomputed independently
    expected = load_config({"name": "grid", "model": {"depth": 3, "width": 8, "residual": True, "init": {"scale": 0.5}}})
    assert plan.points[2].config == expected.to_dict()
    # base + axes is written as config.yaml: it loads back to the same plan
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(plan.config_yaml()))
    base2, items2 = load_base(again)
    assert [p.config for p in make_plan(base2, items2).points] == [p.config for p in plan.points]


def test_no_axis_at_all_sweeps_depth_and_an_axis_sweeps_only_itself():
    base = load_config("deep50", ["model.depth=5"])
    assert [(a.key, a.values, a.origin) for a in make_plan(base).axes] == [("model.depth", (1, 2, 4, 5), "default")]
    plan = make_plan(base, [], ["model.residual=false,true"])  # issue 20: not residual × depth
    assert [(a.key, a.values, a.origin) for a in plan.axes] == [("model.residual", (False, True), "--over")]
    assert len(plan.points) == 2 and plan.points[-1].variant == "deep50[residual=true]"


def test_default_out_names_the_given_axes():
    from resflow.sweep.runner import default_out

    base = load_config("deep50", ["model.depth=4"])
    assert str(default_out(make_plan(base))) == "results/deep50-sweep"
    assert str(default_out(make_plan(base, [], ["model.residual=false,true"]))) == "results/deep50-sweep-residual"


@pytest.mark.parametrize(
    "over, expected",
    [
        ("model.dept=1,2", "model.dept: unknown key; did you mean 'model.depth'?"),
        ("model.depth=abc,2", "--over model.depth: must be a valid integer, got 'abc'"),
        ("model.depth=0,2", "--over model.depth: must be greater than or equal to 1"),
        ("model.depth=", "--over model.depth: needs at least one value"),
        ("model.depth=1,,2", "empty value in the list"),
        ("model.depth", "expected KEY=V1,V2"),
        ("model.activation=tanh,nope", "--over model.activation: must be "),
        ("model.init.scale=1,1.0", "--over model.init.scale: the value 1.0 appears twice"),
        ("name=a,b", "--over name: cannot be swept"),
    ],
    ids=["unknown-key", "bad-type", "out-of-range", "empty", "empty-item", "no-equals", "bad-choice", "duplicate", "name"],
)
def test_bad_axes_are_one_line_errors(tmp_path, over, expected):
    out = tmp_path / "s"
    result = invoke("sweep", "deep50", "--over", over, "--out", out, *SMALL)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "section, expected",
    [
        ("sweep: {model.depth: []}", "sweep.model.depth: the list of values is empty"),
        ("sweep: {model.depth: 5}", "sweep.model.depth: must be a list of values, got 5"),
        ("sweep: [model.depth]", "sweep: must be a mapping"),
        ("sweep: {model.widht: [1, 2]}", "sweep: model.widht: unknown key; did you mean 'model.width'?"),
    ],
    ids=["empty", "not-a-list", "not-a-mapping", "unknown-key"],
)
def test_bad_yaml_axes(tmp_path, section, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model: {{depth: 3, width: 8}}\n{section}\n")
    result = invoke("sweep", path, "--out", tmp_path / "s")
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------
# running


def test_workers_do_not_change_a_bit(tmp_path):
    args = ["sweep", "deep50", "--over", "model.depth=1,3,6", "--over", "model.residual=false,true", *SMALL]
    one = invoke(*args, "--workers", 1, "--out", tmp_path / "w1")
    two = invoke(*args, "--workers", 2, "--out", tmp_path / "w2")
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    for name in CSVS:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    grads = pd.read_csv(tmp_path / "w2" / "grads.csv")
    # rows in grid order, labelled, every swept key a column in every CSV
    assert list(dict.fromkeys(grads["variant"])) == [
        f"deep50[depth={d},residual={r}]" for d in (1, 3, 6) for r in ("false", "true")
    ]
    for name in CSVS:
        df = pd.read_csv(tmp_path / "w2" / name)
        assert {"depth", "residual"} <= set(df.columns), name
    # a point's rows equal a direct run of its config (the reference: resflow.run, no sweep involved)
    direct = run(load_config("deep50", ["model.width=8", "data.batch_size=4", "seeds=2", "model.depth=3", "model.residual=true"]))
    point = grads[grads["variant"] == "deep50[depth=3,residual=true]"]
    assert point["input_grad_norm"].tolist() == direct.grads["input_grad_norm"].tolist()
    assert point["param_grad_norm"].tolist() == direct.grads["param_grad_norm"].tolist()
    summary = pd.read_csv(tmp_path / "w2" / "summary.csv")
    assert len(summary) == 6 * 2
    # the table: plain tanh loses gradient with depth, residual does not
    assert "residual=false: first/last-layer gradient" in two.output and "vanishes" not in two.output.split("residual=true")[-1]
    meta = json.loads((tmp_path / "w2" / "meta.json").read_text())
    assert meta["kind"] == "sweep" and [a["column"] for a in meta["axes"]] == ["depth", "residual"]


def test_existing_dir_needs_resume_or_force(tmp_path):
    args = ["sweep", "deep50", "--over", "model.depth=1,2", *SMALL, "--workers", 1, "--out", tmp_path / "s"]
    assert invoke(*args).exit_code == 0
    before = (tmp_path / "s" / "grads.csv").read_bytes()
    again = invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.output and "--force" in again.output
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0 and (tmp_path / "s" / "grads.csv").read_bytes() == before
    other = invoke(*args[:-2], "--set", "model.residual=true", "--out", tmp_path / "s", "--resume")
    assert other.exit_code == 2 and "different sweep" in other.output
    replaced = invoke(*args[:-2], "--set", "model.residual=true", "--out", tmp_path / "s")
    assert replaced.exit_code == 2 and "different sweep" in replaced.output and "--force" in replaced.output
    nothing = invoke(*args[:-2], "--out", tmp_path / "none", "--resume")
    assert nothing.exit_code == 2 and "no sweep to resume" in nothing.output


BIG = [
    "--over",
    "model.depth=10,20,40",
    "--over",
    "model.init.scale=0.5,1,1.5,2",  # 12 points, ~0.1 s each
    "--set",
    "model.width=32",
    "--set",
    "data.batch_size=32",
    "--seeds",
    "3",
]


def _wait_for_points(out, n, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it could be interrupted: {proc.communicate()}")
        if len(list((out / "points").glob("*.json"))) >= n:
            return
        time.sleep(0.01)
    pytest.fail("no point finished in time")


@pytest.mark.parametrize("how, workers", [("sigint", 2), ("kill9", 1)])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, cli_env, resflow_cmd_terminal, how, workers):
    out = tmp_path / "s"
    cmd = [*resflow_cmd_terminal, "sweep", "deep50", *BIG, "--workers", str(workers), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_points(out, 2, proc)
    if how == "sigint":  # like Ctrl-C in a terminal: the whole process group gets it
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.kill()
    stdout, stderr = proc.communicate(timeout=60)
    saved = list((out / "points").glob("*.json"))
    assert 2 <= len(saved) < 12, "the interrupt should land mid-sweep"
    for f in saved:
        json.loads(f.read_text())  # every saved point file is whole
    assert not (out / "grads.csv").exists()
    if how == "sigint":
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr and "points are saved" in stderr and "--resume" in stderr
        resume_cmd = stderr.split("finish the sweep with: ")[1].split()
        assert resume_cmd[:2] == ["resflow", "sweep"] and resume_cmd[-1] == "--resume"
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = invoke("sweep", "deep50", *BIG, "--workers", workers, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming: {len(saved)} of 12 points already finished" in resumed.output
    full = invoke("sweep", "deep50", *BIG, "--workers", 2, "--out", tmp_path / "full")
    assert full.exit_code == 0, full.output
    for name in CSVS:
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_ray_backend_equals_local(tmp_path):
    pytest.importorskip("ray")
    args = ["sweep", "deep50", "--over", "model.depth=2,4", "--over", "model.residual=false,true", *SMALL]
    local = invoke(*args, "--workers", 1, "--out", tmp_path / "local")
    ray = invoke(*args, "--workers", 2, "--backend", "ray", "--out", tmp_path / "ray")
    assert local.exit_code == 0 and ray.exit_code == 0, local.output + ray.output
    for name in CSVS:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    meta = json.loads((tmp_path / "ray" / "meta.json").read_text())
    assert meta["backend"] == "ray"
    import torch

    assert meta["worker_versions"]["torch"] == torch.__version__ and meta["worker_versions"]["resflow"] == meta["resflow"]


def test_ray_is_not_imported_by_the_cli(cli_env):
    code = "import sys, resflow.cli.app, resflow.sweep.runner, resflow.executors.pool; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_pool_starts_the_biggest_points_first(monkeypatch):
    """LPT scheduling: points are handed to the pool in decreasing cost (depth x width^2 x batch x
    seeds), so the last points to start are the small ones."""
    import concurrent.futures

    from resflow.config.loading import load_config
    from resflow.executors import pool as backends
    from resflow.sweep.plan import make_plan

    submitted = []

    class Recording(concurrent.futures.Executor):  # runs nothing; records the order of submission
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, point):
            submitted.append(point.index)
            future = concurrent.futures.Future()
            future.set_result("{}")
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recording)
    base = load_config({"name": "t", "seeds": 1, "model": {"depth": 2, "width": 8}})
    plan = make_plan(base, cli_axes=["model.depth=10,40,20", "model.width=8,16"])
    by_index = {p.index: p for p in plan.points}
    backends.execute(plan.points, run_point, lambda point, text: None, workers=2)
    dims = [(by_index[i].config["model"]["depth"], by_index[i].config["model"]["width"]) for i in submitted]
    work = [d * w * w for d, w in dims]
    assert sorted(submitted) == list(range(6)) and work == sorted(work, reverse=True)
    assert dims[0] == (40, 16) and dims[-1] == (10, 8)


def test_point_payload_keeps_what_only_looks_constant():
    from resflow.sweep.points import _constant
    from resflow.sweep.points import part_columns as _columns

    assert _constant([0.5, 0.5], "f") and _constant(["a", "a"], "O") and _constant([3, 3], "i")
    assert not _constant([0.0, -0.0], "f")  # equal, but printed differently
    assert not _constant([True, 1, 1.0], "O")
    assert not _constant([float("nan"), float("nan")], "f")
    assert not _constant([], "f")
    part = {"n": 2, "order": ["a", "b"], "const": {"b": "x"}, "cols": {"a": [1, 2]}}
    assert _columns(part) == {"a": [1, 2], "b": ["x", "x"]}
    assert _columns({"a": [1, 2]}) == {"a": [1, 2]}  # a point file from before the compact form


def test_a_seed_axis_with_several_seeds_per_point_is_refused(tmp_path):
    """seed=0 with seeds 5 runs seeds 0-4 and seed=1 runs 1-5: overlapping seeds, rows mislabelled."""
    out = tmp_path / "s"
    result = invoke("sweep", "deep50", *SMALL, "--over", "seed=0,1,2", "--seeds", 5, "--workers", 1, "--out", out)
    assert result.exit_code == 2 and "--over seed" in result.output and "--seeds" in result.output
    assert not out.exists()
    ok = invoke(
        "sweep", "deep50", *SMALL, "--over", "seed=0,1,2", "--over", "model.depth=2", "--seeds", 1, "--workers", 1, "--out", out
    )
    assert ok.exit_code == 0
    grads = pd.read_csv(out / "grads.csv")
    assert sorted(grads["seed"].unique()) == [0, 1, 2]
    assert not grads.duplicated(["variant", "seed", "step", "layer", "sublayer"]).any()


def test_backend_problems_are_refused_before_the_dir_is_made(tmp_path, monkeypatch):
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        out = tmp_path / "cuda"
        result = invoke(
            "sweep", "deep50", *SMALL, "--over", "model.depth=1,2", "--set", "device=cuda", "--workers", 2, "--out", out
        )
        assert result.exit_code == 2 and "no CUDA device" in result.output and not out.exists()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    out = tmp_path / "ray"
    result = invoke("sweep", "deep50", *SMALL, "--over", "model.depth=1,2", "--backend", "ray", "--out", out)
    assert result.exit_code == 2 and "needs Ray" in result.output and not out.exists()
