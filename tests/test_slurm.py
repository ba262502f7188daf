"""`--backend slurm` through submitit, run here with submitit's local executor (each job a separate
process, as on a cluster's node): the same point files, --resume, and CSVs byte-identical to a local sweep."""

import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.executors.slurm import parse_options

pytest.importorskip("submitit")
runner = Runner()
ARGS = [
    "sweep",
    "deep50",
    "--over",
    "model.residual=false,true",
    "--over",
    "model.depth=1,2,4",
    "--set",
    "model.depth=4",
    "--set",
    "model.width=8",
    "--set",
    "data.batch_size=4",
    "--seeds",
    2,
    "--no-plots",
]
TABLES = ("grads.csv", "params.csv", "summary.csv")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_slurm_local_sweep_equals_local_byte_for_byte_and_resumes(tmp_path, monkeypatch, cli_env):
    monkeypatch.setenv("RESFLOW_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("PYTHONPATH", cli_env["PYTHONPATH"])  # the jobs' processes import this checkout
    local = invoke(*ARGS, "--workers", 1, "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    slurm = invoke(*ARGS, "--backend", "slurm", "--workers", 2, "--slurm", "timeout_min=10", "--out", tmp_path / "slurm")
    assert slurm.exit_code == 0, slurm.output
    for name in TABLES:
        assert (tmp_path / "slurm" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert len(list((tmp_path / "slurm" / "slurm").glob("*_log.out"))) == 2  # two jobs, their logs kept
    # an interrupted sweep: one point file and the CSVs gone; --resume runs that point alone
    points = sorted((tmp_path / "slurm" / "points").glob("*.json"))
    points[1].unlink()
    for name in TABLES:
        (tmp_path / "slurm" / name).unlink()
    again = invoke(
        *ARGS, "--backend", "slurm", "--workers", 2, "--slurm", "timeout_min=10", "--out", tmp_path / "slurm", "--resume"
    )
    assert again.exit_code == 0, again.output
    assert "resuming: 5 of 6 points already finished" in again.stderr  # 3 depths x 2
    for name in TABLES:
        assert (tmp_path / "slurm" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    # a results dir with the jobs' logs is resflow's own: --force replaces it
    assert invoke(*ARGS, "--workers", 1, "--out", tmp_path / "slurm", "--force").exit_code == 0


def test_slurm_options_and_refusals(tmp_path, monkeypatch):
    assert parse_options(["partition=gpu", "timeout_min=30", "mem-gb=4", "slurm_qos=low"]) == {
        "slurm_partition": "gpu",
        "timeout_min": 30,
        "mem_gb": 4,
        "slurm_qos": "low",
    }
    bad = invoke(*ARGS, "--slurm", "partition=gpu", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "--backend slurm" in bad.stderr and not (tmp_path / "x").exists()
    bad = invoke(*ARGS, "--backend", "slurm", "--slurm", "partition", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.stderr and not (tmp_path / "x").exists()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    missing = invoke(*ARGS, "--backend", "slurm", "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "pip install" in missing.stderr and not (tmp_path / "x").exists()
