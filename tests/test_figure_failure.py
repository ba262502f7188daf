"""A figure that fails to draw never costs the tables: run, sweep, compare, training, plot and report
write (or keep) the CSVs/Parquet, config.yaml and meta.json, draw the other figures, say in one line
which figure failed, and exit 3 (docs/guarantees.md). The failure is forced by replacing one plotting
function with one that raises; `resflow show` and `resflow export` then read the dir as usual."""

import json

import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.report.figures import plots
from resflow.results.files import read_run

runner = Runner()
SMALL = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "data.batch_size=2", "--seeds", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def broken(name: str):
    def draw(*args, **kwargs):
        raise RuntimeError(f"{name} is broken on purpose")

    return draw


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def assert_tables_readable(out, tables=("grads", "params", "summary"), ext="csv"):
    for table in tables:
        assert (out / f"{table}.{ext}").is_file(), table
    meta = json.loads((out / "meta.json").read_text())
    assert {f"{t}.{ext}" for t in tables} <= set(meta["files"])  # meta.json vouches for them
    read_run(out)  # checks every file against meta.json's hashes and rows
    shown = invoke("show", out)
    assert shown.exit_code == 0, shown.output


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_run_keeps_its_tables_when_a_figure_fails(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(plots, "params_figure", broken("params"))
    out = tmp_path / "r"
    result = invoke("run", "deep50", "--out", out, "--format", fmt, *SMALL)
    assert result.exit_code == 3, result.output  # resflow.errors.FIGURE
    line = one_line(result.stderr)
    assert "params.png" in line and "params is broken on purpose" in line and "resflow plot" in line
    assert "layer 0 receives" in result.stdout  # the table and headline are printed as usual
    assert_tables_readable(out, ext=fmt)
    assert (out / "profile.png").is_file() and not (out / "params.png").exists()
    assert not list(tmp_path.glob(".r.*")), list(tmp_path.iterdir())  # no staging dir left beside it
    assert invoke("plot", out).exit_code == 3  # still broken: said again, the tables untouched
    monkeypatch.undo()  # fixed: `plot` redraws from the tables
    replot = invoke("plot", out)
    assert replot.exit_code == 0 and (out / "params.png").is_file()


def test_every_figure_failing_still_writes_the_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "describe", broken("describe"))  # every figure's title: all of them fail
    out = tmp_path / "r"
    result = invoke("run", "deep50", "--out", out, *SMALL)
    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert "profile.png" in line and "params.png" in line
    assert_tables_readable(out)
    assert not list(out.glob("*.png"))


def test_training_run_keeps_its_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "loss_figure", broken("loss"))
    out = tmp_path / "t"
    result = invoke("run", "train50-plain", "--out", out, *SMALL, "--set", "train.steps=2", "--set", "train.record_every=1")
    assert result.exit_code == 3, result.output
    assert "loss.png" in one_line(result.stderr)
    assert_tables_readable(out, ("grads", "params", "summary", "train"))
    assert (out / "steps.png").is_file() and not (out / "loss.png").exists()


def test_sweep_keeps_its_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "depth_figure", broken("ratio"))
    out = tmp_path / "s"
    result = invoke("sweep", "deep50", "--over", "model.residual=false,true", "--workers", 1, "--out", out, *SMALL)
    assert result.exit_code == 3, result.output
    assert "ratio.png" in one_line(result.stderr)
    assert "wrote" in result.stdout and "profile.png" in result.stdout  # the sweep table and what was drawn
    assert_tables_readable(out)


def test_compare_keeps_its_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "profile_figure", broken("profile"))
    out = tmp_path / "c"
    result = invoke("compare", "deep50", "deep50-residual", "--workers", 1, "--out", out, *SMALL)
    assert result.exit_code == 3, result.output
    assert "profile.png" in one_line(result.stderr)
    assert_tables_readable(out)
    assert (out / "params.png").is_file()


def test_plot_report_and_export_of_a_dir_whose_figure_fails(tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert invoke("run", "deep50", "--out", out, "--no-plots", *SMALL).exit_code == 0
    monkeypatch.setattr(plots, "profile_figure", broken("profile"))
    plotted = invoke("plot", out)
    assert plotted.exit_code == 3 and "profile.png" in one_line(plotted.stderr)
    assert (out / "params.png").is_file()  # the other figure is drawn
    report = invoke("report", out)
    assert report.exit_code == 3 and "profile.png" in one_line(report.stderr)
    page = (out / "report.html").read_text()
    assert "profile.png could not be drawn" in page and "<table>" in page and "params figure" in page
    pytest.importorskip("tensorboard")
    exported = invoke("export", out, tmp_path / "tb", "--to", "tensorboard")  # tables only: no figure involved
    assert exported.exit_code == 0, exported.output
    assert_tables_readable(out)
