"""results.write_files with a forked helper for params.csv (a sweep with --workers >= 2): the same
bytes as one process writes, and a helper that fails leaves no trace (its file is written anyway)."""

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

import resflow.results as results
from resflow.results import GRADS_COLUMNS, PARAMS_COLUMNS, RunResult, write_files

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the helper is forked")


def big_result() -> RunResult:
    n = results.PARALLEL_ROWS + 10
    rng = np.random.default_rng(1)
    grads = pd.DataFrame({c: np.repeat("x", n // 2) for c in GRADS_COLUMNS})
    grads["input_grad_norm"] = np.exp(rng.normal(0, 20, n // 2))
    params = pd.DataFrame({c: np.tile(["linear.weight", "linear.bias"], n // 2) for c in PARAMS_COLUMNS})
    params["grad_norm"] = np.exp(rng.normal(0, 20, len(params)))
    params["seed"] = np.arange(len(params)) // 7
    summary = pd.DataFrame({"variant": ["a"], "grad_ratio": [0.5]})
    return RunResult(grads=grads, params=params, summary=summary, config={"name": "x"}, meta={"kind": "test"})


def files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_helper_writes_the_same_bytes(tmp_path):
    result = big_result()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_files(result, tmp_path / "one")
    write_files(result, tmp_path / "two", processes=2)
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert one == two
    assert len(one["params.csv"]) > 100_000  # big enough that the helper ran
    assert pd.read_csv(tmp_path / "two" / "params.csv")["grad_norm"].tolist() == result.params["grad_norm"].tolist()


def test_a_failed_helper_is_covered(tmp_path, monkeypatch):
    parent = os.getpid()
    real = results.write_csv

    def failing_in_the_helper(df, path, *args):
        if os.getpid() != parent:
            path.with_name(f".{path.name}.half.tmp").write_text("partial")  # as if killed mid-write
            raise OSError("disk full")
        real(df, path, *args)

    monkeypatch.setattr(results, "write_csv", failing_in_the_helper)
    result = big_result()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_files(result, tmp_path / "one")
    write_files(result, tmp_path / "two", processes=2)
    assert files(tmp_path / "one") == files(tmp_path / "two")  # params.csv written by the parent; no temp file left


def _slow_helper(monkeypatch, parent, before_writing):
    """The helper (the forked child) runs `before_writing()` once its temp file exists, then writes."""
    real = results._fsync_write

    def fsync_write(path, text):
        if os.getpid() != parent and path.name.startswith(".params.csv."):
            before_writing()
        real(path, text)

    monkeypatch.setattr(results, "_fsync_write", fsync_write)


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _track_forks(monkeypatch) -> list[int]:
    pids, real = [], results._fork

    def fork(work):
        pids.append(real(work))
        return pids[-1]

    monkeypatch.setattr(results, "_fork", fork)
    return pids


def test_an_interrupt_while_writing_grads_stops_the_helper_and_leaves_no_file(tmp_path, monkeypatch):
    parent = os.getpid()
    pids = _track_forks(monkeypatch)
    _slow_helper(monkeypatch, parent, lambda: time.sleep(5))
    real_write = results.write_csv

    def interrupted_grads(df, path, *args):
        if os.getpid() == parent and path.name == "grads.csv":
            _wait_for(lambda: list(tmp_path.glob(".params.csv.*.tmp")))  # the helper is mid-write
            raise KeyboardInterrupt
        real_write(df, path, *args)

    monkeypatch.setattr(results, "write_csv", interrupted_grads)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        write_files(big_result(), tmp_path, processes=2)
    assert time.monotonic() - t0 < 4  # did not wait for the helper's write
    assert len(pids) == 1
    with pytest.raises(ChildProcessError):  # stopped and reaped: it can finish nothing later
        os.waitpid(pids[0], os.WNOHANG)
    assert list(tmp_path.iterdir()) == []  # its temp file too


def test_a_signal_while_waiting_for_the_helper_leaves_whole_files_or_none(tmp_path, monkeypatch):
    parent = os.getpid()
    pids = _track_forks(monkeypatch)

    def signal_parent_then_write():  # as `kill -INT <parent>` would, once grads.csv is written
        _wait_for(lambda: (tmp_path / "grads.csv").exists())
        os.kill(parent, signal.SIGINT)
        time.sleep(0.5)

    _slow_helper(monkeypatch, parent, signal_parent_then_write)
    result = big_result()
    with pytest.raises(KeyboardInterrupt):
        write_files(result, tmp_path, processes=2)
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in (["grads.csv"], ["grads.csv", "params.csv"])  # no temp file, nothing half-written
    if "params.csv" in names:  # the helper finished: its file is whole
        assert pd.read_csv(tmp_path / "params.csv")["grad_norm"].tolist() == result.params["grad_norm"].tolist()
