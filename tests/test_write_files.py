"""results.write_files with a forked helper for params.csv (a sweep with --workers >= 2): the same
bytes as one process writes, and a helper that fails leaves no trace (its file is written anyway)."""

import os

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


def test_an_interrupt_stops_the_helper_and_leaves_no_file(tmp_path, monkeypatch):
    import time

    parent, pids = os.getpid(), []
    real_fork, real_write = results._fork, results.write_csv

    def slow_fork(work):  # a helper still busy with params.csv when the parent is interrupted
        def slowly():
            time.sleep(2)
            work()
        pids.append(real_fork(slowly))
        return pids[-1]

    def interrupted_grads(df, path, *args):
        if os.getpid() == parent and path.name == "grads.csv":
            raise KeyboardInterrupt
        real_write(df, path, *args)

    monkeypatch.setattr(results, "_fork", slow_fork)
    monkeypatch.setattr(results, "write_csv", interrupted_grads)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        write_files(big_result(), tmp_path, processes=2)
    assert time.perf_counter() - t0 < 1.5  # did not wait for the helper's write
    assert len(pids) == 1
    with pytest.raises(ChildProcessError):  # stopped and reaped: it can finish nothing later
        os.waitpid(pids[0], os.WNOHANG)
    assert list(tmp_path.iterdir()) == []
