"""Faults lose nothing: signals stop cleanly (130/143) with nothing half-written, one writer per
results dir (a stale lock from a killed process is taken over), an interrupted --force keeps the old
result, and a sweep point that raises is recorded while the others complete."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from resflow._sys.locks import lock_path, results_lock
from resflow._sys.signals import Terminated, deferred, stop_on_signals
from resflow.cli.app import app

runner = CliRunner()
OK = "model: {depth: 3, width: 4}\n"
SLOW = ["--set", "model.depth=2000", "--set", "model.width=64", "--set", "data.batch_size=32", "--set", "seeds=3", "--no-plots"]


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _wait_for(path: Path, proc, timeout=60.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


HOLDER = """
import sys, time
from resflow._sys.locks import results_lock
with results_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path, cli_env):
    """A separate live process holding the lock of tmp_path/out."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")], env=cli_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_writer_is_refused_then_a_stale_lock_is_taken_over(tmp_path, holder):
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(config), "--out", str(out)])
    lines = _lines(result.stderr)
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert "being written by another resflow process" in lines[0] and f"pid {holder.pid}" in lines[0]
    assert not out.exists()

    holder.send_signal(signal.SIGKILL)  # dies without cleaning up: its lock file stays behind
    holder.wait()
    assert lock_path(out).exists()
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.stderr
    assert "stale lock" in result.stderr and f"pid {holder.pid}" in result.stderr
    assert (out / "grads.csv").is_file()
    assert not lock_path(out).exists()  # cleaned up on exit


def test_lock_is_released_on_error_and_reentry_is_refused(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with results_lock(out):
            assert lock_path(out).exists()
            raise RuntimeError("boom")
    assert not lock_path(out).exists()
    with results_lock(out):
        from resflow.errors import ResflowError

        with pytest.raises(ResflowError, match="another resflow process"):
            with results_lock(out):
                pass
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_during_run_stops_cleanly_and_writes_nothing(tmp_path, resflow_cmd_terminal, cli_env, sig, code):
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*resflow_cmd_terminal, "run", str(config), "--out", str(out), *SLOW],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lock_path(out), proc)
    time.sleep(1.0)  # well into the run
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    lines = _lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({signal.Signals(sig).name})"), stderr
    assert "Traceback" not in stderr and stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]  # no out dir, no staging dir, no lock


def test_interrupted_force_keeps_the_old_result(tmp_path, monkeypatch):
    import resflow.results.files as results

    config = tmp_path / "c.yaml"
    config.write_text(OK)
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(config), "--out", str(out), "--no-plots"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = results.write_csv
    calls = []

    def write_then_stop(df, path):
        calls.append(path)
        real(df, path)
        if len(calls) == 2:
            raise Terminated(signal.SIGTERM)  # SIGTERM halfway through writing the new result

    monkeypatch.setattr(results, "write_csv", write_then_stop)
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--force", "--set", "model.depth=5"])
    assert result.exit_code == 143 and "interrupted (SIGTERM)" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]  # the staging dir is gone too


def test_a_signal_inside_deferred_waits_for_the_block():
    steps = []
    with pytest.raises(Terminated) as caught:
        with stop_on_signals():
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                steps.append("finished the block")
            steps.append("after the block")
    assert steps == ["finished the block"] and caught.value.signum == signal.SIGTERM


def test_unknown_memory_limit_value_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", "lots")
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "RESFLOW_MEMORY_LIMIT='lots'" in result.stderr


def test_memory_limit_refuses_what_does_not_fit(tmp_path, monkeypatch):
    from resflow.config.loading import load_config
    from resflow.config.memory import estimate

    cfg = load_config({"model": {"depth": 100, "width": 256}, "data": {"batch_size": 64}})
    est = estimate(cfg)
    # weights + grads: 100 * (256*256 + 256) * 4 bytes * 2, exactly
    assert est.params == 100 * (256 * 256 + 256) * 4 * 2
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", f"{est.total // 2}")
    config = tmp_path / "c.yaml"
    config.write_text("model: {depth: 100, width: 256}\ndata: {batch_size: 64}\n")
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "reduce model.width" in result.stderr
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", "none")
    assert runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "o"), "--no-plots"]).exit_code == 0


MEASURE = """
import json, resource, sys
import torch
from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.config.memory import estimate
torch.set_num_threads(1)
cfg = load_config(json.loads(sys.argv[1]))
import os
run(load_config({"model": {"depth": 2, "width": 4}}))
# the resident size now (not the peak so far: importing torch can peak above the steady state)
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
try:  # and the kernel's peak reset to it (Linux >= 4.0), so an earlier peak cannot count
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
if cfg.train.steps:
    from resflow.train.loop import train
    train(cfg)
else:
    run(cfg)
if reset:
    status = open("/proc/self/status").read()
    peak = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) * 1024
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps([peak - base, estimate(cfg).total]))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kB is Linux's")
def test_memory_estimate_is_within_a_factor_of_two_of_the_measured_peak(cli_env):
    """Weights-dominated (100 x 512^2 float32, ~200 MB): the estimate against the process's peak RSS."""
    cfg = {"model": {"depth": 100, "width": 512}, "data": {"batch_size": 16}}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(cfg)], env=cli_env, capture_output=True, text=True, timeout=300
    )
    measured, estimated = json.loads(proc.stdout)
    assert 0.5 <= estimated / measured <= 2.0, (measured, estimated)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kB is Linux's")
def test_training_memory_estimate_counts_optimizer_state_and_train_batch(cli_env):
    """Adam training keeps ~8 copies of the weights (weights, grads, W_0, previous W, the differences,
    two moments):
    the estimate against the peak RSS, and train.batch_size (not data.batch_size) sizes activations."""
    from resflow.config.loading import load_config
    from resflow.config.memory import estimate

    cfg = {
        "model": {"depth": 40, "width": 512},
        "data": {"batch_size": 4},
        "train": {"steps": 2, "optimizer": "adam", "batch_size": 16, "eval_batches": 1},
    }
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(cfg)], env=cli_env, capture_output=True, text=True, timeout=300
    )
    measured, estimated = json.loads(proc.stdout)
    assert 0.5 <= estimated / measured <= 2.0, (measured, estimated)
    est = estimate(load_config(cfg))
    assert est.params == 8 * 40 * (512 * 512 + 512) * 4
    at_init = estimate(load_config({**cfg, "train": {"steps": 0}}))
    assert est.activations == 4 * at_init.activations  # batch 16 for training against data.batch_size 4


@pytest.mark.parametrize(
    "args, written",
    [
        (["demo", "tanh50", "--seeds", "3"], "demo.csv"),
        (
            [
                "compare",
                "deep50",
                "deep50-residual",
                "--set",
                "model.depth=2",
                "--set",
                "model.width=4",
                "--seeds",
                "1",
                "--no-plots",
            ],
            "grads.csv",
        ),
    ],
    ids=["demo", "compare"],
)
def test_a_command_into_a_dir_another_process_is_writing_is_refused(tmp_path, args, written):
    out = tmp_path / "out"
    with results_lock(out):  # held as by another live resflow (this process: alive)
        result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1 and "being written by another resflow process" in result.stderr, result.output
    assert not out.exists()
    done = runner.invoke(app, [*args, "--out", str(out)])  # the lock is gone: it runs
    assert done.exit_code == 0 and (out / written).is_file() and not lock_path(out).exists()


@pytest.mark.parametrize(
    "args", [["theory", "deep50"], ["run", "deep50", "--no-plots", "--set", "model.depth=3"]], ids=["theory-echo", "run-rich"]
)
def test_stdout_closed_by_the_reader_is_quiet_and_keeps_the_results(tmp_path, resflow_cmd, cli_env, args):
    """`resflow ... | head`: the reader goes away. No traceback, no crash report, exit 1; a run's
    results dir is complete (it is written before anything is printed)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before resflow writes a byte
    out = tmp_path / "out"
    try:
        proc = subprocess.run(
            [*resflow_cmd, *args, *(["--out", str(out)] if args[0] == "run" else [])],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    if args[0] == "run":
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "grads.csv", "meta.json", "params.csv", "summary.csv"]
        assert len(pd.read_csv(out / "grads.csv")) == 3 * 5  # depth 3 × deep50's 5 seeds
