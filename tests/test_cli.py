"""The CLI in-process (CliRunner) and as a subprocess: outputs, overwrite protection, errors, rerun."""

import json
import subprocess

import pandas as pd
import pytest
from clirunner import Runner

from resflow import __version__
from resflow.cli.app import app
from resflow.results.files import read_csv
from resflow.results.tables import GRADS_COLUMNS, PARAMS_COLUMNS, SUMMARY_COLUMNS

pytestmark = pytest.mark.smoke  # also run at the lowest allowed dependency versions (.ci/run)

runner = Runner()
SMALL = ["--set", "model.depth=6", "--set", "model.width=8", "--set", "data.batch_size=4"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
    for cmd in (["--help"], ["run", "--help"], ["demo", "--help"]):
        assert invoke(*cmd).exit_code == 0


def test_run_writes_schema(tmp_path):
    out = tmp_path / "r"
    result = invoke("run", "deep50", "--out", out, "--seeds", 2, *SMALL)
    assert result.exit_code == 0, result.output
    assert "layer 0 receives" in result.output
    grads = pd.read_csv(out / "grads.csv")
    params = pd.read_csv(out / "params.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert list(grads.columns[: len(GRADS_COLUMNS)]) == GRADS_COLUMNS
    assert list(params.columns[: len(PARAMS_COLUMNS)]) == PARAMS_COLUMNS
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert len(grads) == 2 * 6 and len(params) == 2 * 6 * 2 and len(summary) == 2
    assert set(grads["variant"]) == {"deep50"} and set(grads["step"]) == {0}
    assert (grads["depth"] == 6).all() and (grads["activation"] == "tanh").all()
    # summary agrees with grads
    s0 = summary.iloc[0]
    g0 = grads[grads["seed"] == 0]["input_grad_norm"].to_numpy()
    assert s0["grad_first"] == g0[0] and s0["grad_last"] == g0[-1]
    assert s0["grad_ratio"] == pytest.approx(g0[0] / g0[-1], rel=1e-15)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == [0, 1] and meta["dtype"] == "float32" and "torch" in meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_no_overwrite_without_force(tmp_path):
    out = tmp_path / "r"
    assert invoke("run", "deep50", "--out", out, *SMALL).exit_code == 0
    before = (out / "grads.csv").read_bytes()
    result = invoke("run", "deep50", "--out", out, *SMALL, "--set", "model.residual=true")
    assert result.exit_code == 2
    assert "already holds results" in result.output and "--force" in result.output
    assert (out / "grads.csv").read_bytes() == before
    result = invoke("run", "deep50", "--out", out, *SMALL, "--set", "model.residual=true", "--force")
    assert result.exit_code == 0
    assert (out / "grads.csv").read_bytes() != before
    assert pd.read_csv(out / "grads.csv")["residual"].all()


def test_rerun_from_config_yaml_is_bit_for_bit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("run", "deep50", "--out", a, "--seeds", 3, *SMALL, "--set", "model.norm=pre").exit_code == 0
    assert invoke("run", a / "config.yaml", "--out", b).exit_code == 0
    assert (a / "grads.csv").read_bytes() == (b / "grads.csv").read_bytes()
    assert (a / "params.csv").read_bytes() == (b / "params.csv").read_bytes()
    assert (a / "config.yaml").read_bytes() == (b / "config.yaml").read_bytes()


def test_csv_floats_round_trip_exactly(tmp_path):
    from resflow.config.loading import load_config
    from resflow.experiment import run

    out = tmp_path / "r"
    assert invoke("run", "deep50", "--out", out, *SMALL, "--set", "dtype=float64").exit_code == 0
    fresh = run(load_config("deep50", SMALL[1::2] + ["dtype=float64"]))
    assert read_csv(out / "grads.csv")["input_grad_norm"].tolist() == fresh.grads["input_grad_norm"].tolist()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "nosuchconfig"], "not found"),
        (["run", "deep50", "--set", "model.depth=0"], "model.depth"),
        (["run", "deep50", "--set", "model.depht=3"], "did you mean 'model.depth'"),
        (["run", "deep50", "--set", "nonsense"], "KEY=VALUE"),
        (["run", "deep50", "--seeds", "0"], "seeds"),
        (["run", "deep50", "--set", "model.activation=swish"], "model.activation"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    result = runner.invoke(app, args + ["--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_out_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    result = invoke("run", "deep50", "--out", f, *SMALL)
    assert result.exit_code == 2 and "is a file" in result.output
    assert f.read_text() == "x"


def test_subprocess_errors_go_to_stderr(tmp_path, resflow_cmd, cli_env):
    proc = subprocess.run(resflow_cmd + ["run", str(tmp_path / "missing.yaml")], capture_output=True, text=True, env=cli_env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_run_from_another_directory_by_name(tmp_path, resflow_cmd, cli_env):
    proc = subprocess.run(
        resflow_cmd + ["run", "deep50-residual", *SMALL], capture_output=True, text=True, cwd=tmp_path, env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results" / "deep50-residual" / "grads.csv").is_file()


def test_demo_chain_prints_closed_form():
    result = invoke("demo", "chain")
    assert result.exit_code == 0, result.output
    assert "0.00515377520732012" in result.output
    assert "1.5777218104420236e-30" in result.output


def test_demo_tanh50_writes_demo_csv(tmp_path):
    out = tmp_path / "d"
    result = invoke("demo", "tanh50", "--seeds", 50, "--out", out)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "demo.csv")
    assert list(df.columns) == ["seed", "weight", "bias", "grad_plain", "grad_residual"]
    assert len(df) == 50
    assert invoke("demo", "tanh50", "--seeds", 50, "--out", out).exit_code == 2  # no silent overwrite


def test_force_never_deletes_files_resflow_did_not_write(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for extra in ([], ["--force"]):
        result = invoke("run", "deep50", "--out", mine, *SMALL, *extra)
        assert result.exit_code == 2
        assert "holds files resflow did not write (thesis.tex)" in result.output and "choose another --out" in result.output
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    # a results dir the user added a file to: refused too, results and file kept
    out = tmp_path / "r"
    assert invoke("run", "deep50", "--out", out, *SMALL).exit_code == 0
    (out / "notes.md").write_text("mine")
    before = (out / "grads.csv").read_bytes()
    assert invoke("run", "deep50", "--out", out, *SMALL, "--force").exit_code == 2
    assert (out / "notes.md").read_text() == "mine" and (out / "grads.csv").read_bytes() == before
    sweep = invoke("sweep", "deep50", "--over", "model.depth=1,2", *SMALL, "--workers", 1, "--out", out, "--force")
    assert sweep.exit_code == 2 and (out / "notes.md").read_text() == "mine"
    # inside a sweep's points/ too
    swept = tmp_path / "s"
    args = ["sweep", "deep50", "--over", "model.depth=1,2", *SMALL, "--workers", 1, "--out", swept]
    assert invoke(*args).exit_code == 0
    (swept / "points" / "notes.txt").write_text("mine")
    again = invoke(*args, "--force")
    assert again.exit_code == 2 and "points/notes.txt" in again.output
    assert (swept / "points" / "notes.txt").read_text() == "mine"
    (swept / "points" / "notes.txt").unlink()
    assert invoke(*args, "--force").exit_code == 0  # only resflow's files: replaced
    # the current directory (or one that holds it) is never the results dir
    monkeypatch.chdir(out)
    for target in (".", tmp_path):
        result = invoke("run", "deep50", "--out", target, *SMALL, "--force")
        assert result.exit_code == 2 and "current directory" in result.output
    assert (out / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_results_have_the_modes_the_umask_gives(tmp_path, mask):
    import os
    import stat

    old = os.umask(mask)
    try:
        out = tmp_path / "r"
        assert invoke("run", "deep50", "--out", out, *SMALL).exit_code == 0
        sweep = tmp_path / "s"
        assert invoke("sweep", "deep50", "--over", "model.depth=1,2", *SMALL, "--workers", 1, "--out", sweep).exit_code == 0
    finally:
        os.umask(old)
    for directory in (out, sweep):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o777 & ~mask
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert any(p.suffix == ".png" for p in files) and any(p.name == "grads.csv" for p in files)
        assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~mask}, directory


def test_a_file_system_without_modes_still_gets_results(tmp_path, monkeypatch):
    import os

    def no_chmod(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", no_chmod)
    out = tmp_path / "r"
    assert invoke("run", "deep50", "--out", out, *SMALL).exit_code == 0
    assert (out / "grads.csv").is_file()
