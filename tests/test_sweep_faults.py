"""Sweep faults: a point that raises is recorded and retried by --resume, SIGTERM stops with 143 and
the resume command, a second sweep into the same dir is refused; show/plot refuse non-results dirs."""

import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

import resflow.sweep.runner
from resflow._sys.locks import lock_path, results_lock
from resflow.cli.app import app

runner = CliRunner()
SMALL = ["--over", "model.depth=1,2,3", "--set", "model.width=8", "--set", "data.batch_size=4", "--seeds", "2", "--workers", "1"]
CSVS = ("grads.csv", "params.csv", "summary.csv")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_a_failing_point_is_recorded_and_resume_retries_it(tmp_path, monkeypatch):
    real = resflow.sweep.runner.run_point

    def flaky(point):
        if point.index == 1:
            raise FloatingPointError("simulated failure in one point")
        return real(point)

    monkeypatch.setattr(resflow.sweep.runner, "run_point", flaky)
    out = tmp_path / "s"
    result = invoke("sweep", "deep50", *SMALL, "--out", out)
    assert result.exit_code == 1, result.output
    error = [line for line in _lines(result.stderr) if line.startswith("error: ")]
    assert len(error) == 1 and "1 of 3 sweep points failed" in error[0]
    assert "FloatingPointError: simulated failure in one point" in error[0] and "--resume" in error[0]
    assert "Traceback" not in result.output
    failed = list((out / "points").glob("*.failed.txt"))
    assert len(failed) == 1 and "simulated failure" in failed[0].read_text()
    assert len(list((out / "points").glob("*.json"))) == 2  # the other points completed
    assert not (out / "grads.csv").exists()
    assert not lock_path(out).exists()

    monkeypatch.setattr(resflow.sweep.runner, "run_point", real)  # the cause is fixed: --resume retries
    resumed = invoke("sweep", "deep50", *SMALL, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert not list((out / "points").glob("*.failed.txt"))
    full = invoke("sweep", "deep50", *SMALL, "--out", tmp_path / "full")
    assert full.exit_code == 0, full.output
    for name in CSVS:
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_sigterm_mid_sweep_exits_143_and_says_how_to_resume(tmp_path, cli_env, resflow_cmd):
    out = tmp_path / "s"
    cmd = [
        *resflow_cmd,
        "sweep",
        "deep50",
        "--over",
        "model.depth=200,400,600,800,1000,1200",
        "--set",
        "model.width=64",
        "--set",
        "data.batch_size=32",
        "--seeds",
        "2",
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (out / "plan.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 60
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # only the main process, as `kill PID` does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not (out / "grads.csv").exists() and not lock_path(out).exists()


def test_a_second_sweep_into_the_same_dir_is_refused(tmp_path):
    out = tmp_path / "s"
    with results_lock(out):
        result = invoke("sweep", "deep50", *SMALL, "--out", out)
    assert result.exit_code == 1 and "being written by another resflow process" in result.stderr
    assert not out.exists()


def test_a_sweep_too_big_for_memory_is_refused_before_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", "10MB")
    result = invoke("sweep", "deep50", "--over", "model.width=8,2048", "--workers", "2", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "× 2 workers" in result.stderr and "reduce model.width" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["show", "plot"])
@pytest.mark.parametrize("what", ["missing", "empty-dir", "a-file", "other-files"])
def test_show_and_plot_refuse_what_is_not_a_results_dir(tmp_path, command, what):
    target = tmp_path / "x"
    if what == "empty-dir":
        target.mkdir()
    elif what == "a-file":
        target.write_text("hello")
    elif what == "other-files":
        target.mkdir()
        (target / "notes.txt").write_text("hi")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = invoke(command, target)
    lines = _lines(result.stderr)
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(target) in lines[0] and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_ray_task_returns_each_points_error_beside_the_others_results(monkeypatch):
    """The function a Ray task runs (called here in-process): a point that raises comes back as
    (point, None, error) and the task's other points still run and come back with their text."""
    from resflow.config.loading import load_config
    from resflow.executors import pool as backends
    from resflow.sweep.plan import make_plan

    real = resflow.sweep.runner.run_point

    def flaky(point):
        if point.index == 1:
            raise FloatingPointError("simulated failure in one point")
        return real(point)

    monkeypatch.setattr(resflow.sweep.runner, "run_point", flaky)
    plan = make_plan(load_config({"name": "t", "model": {"depth": 2, "width": 4}}), cli_axes=["model.depth=1,2,3"])
    out = backends._ray_task(flaky, plan.points)
    assert [point.index for point, _, _ in out] == [0, 1, 2]
    assert out[1][1:] == (None, "FloatingPointError: simulated failure in one point")
    for point, text, error in (out[0], out[2]):
        assert error is None and text == real(point)  # the same text the local backend would save


def test_a_failing_point_on_ray_is_recorded_and_the_others_equal_local(tmp_path):
    """A point that raises inside a Ray task is a failed point (recorded, the others complete, exit 1),
    not a traceback that loses the task's other points; the points that ran equal the local backend's.
    The failing points ask for CUDA (which local workers refuse up front, before any work, as `run`
    does); on a machine that has it they run, and Ray must then equal local throughout."""
    pytest.importorskip("ray")
    import torch

    args = ["sweep", "deep50", "--over", "device=cpu,cuda", *SMALL]  # 6 points: 3 fail where there is no CUDA
    out = tmp_path / "ray"
    result = invoke(*args, "--backend", "ray", "--workers", 2, "--out", out)
    if torch.cuda.is_available():
        local = invoke(*args, "--workers", 1, "--out", tmp_path / "local")
        assert result.exit_code == 0 and local.exit_code == 0, result.output + local.output
        for name in CSVS:
            assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
        return
    assert result.exit_code == 1, result.output
    error = [line for line in _lines(result.stderr) if line.startswith("error: ")]
    assert len(error) == 1 and "3 of 6 sweep points failed" in error[0] and "no CUDA device" in error[0], result.stderr
    assert "Traceback" not in result.output
    failed = sorted(p.name for p in (out / "points").glob("*.failed.txt"))
    saved = sorted(p.name for p in (out / "points").glob("*.json"))
    assert len(failed) == 3 and len(saved) == 3
    # local workers refuse CUDA up front here (exit 2, nothing written), as `resflow run` does
    refused = invoke(*args, "--workers", 1, "--out", tmp_path / "refused")
    assert refused.exit_code == 2 and "no CUDA device" in refused.output and not (tmp_path / "refused").exists()
    local = invoke("sweep", "deep50", "--over", "device=cpu", *SMALL, "--workers", 1, "--out", tmp_path / "local")
    assert local.exit_code == 0
    for name in saved:  # the points that ran are byte-identical to the local backend's
        assert (out / "points" / name).read_bytes() == (tmp_path / "local" / "points" / name).read_bytes()
