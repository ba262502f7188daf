"""Figures: the plotted numbers are the CSV's numbers, axes are log and fixed, bands and guides and
references are where they should be, PNGs are real images, `resflow plot` works on every kind of
results dir, and non-finite values are drawn (marked), not dropped."""

import math
import struct
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from resflow import load_config, run
from resflow.cli.app import app
from resflow.report.figures.plots import (
    DPI,
    FIGSIZE,
    depth_figure,
    figures,
    heatmap_figure,
    log_limits,
    loss_figure,
    params_figure,
    profile_figure,
)
from resflow.results.files import read_run, write_run
from resflow.results.stats import EXPLODING, VANISHING
from resflow.results.tables import RunResult

runner = CliRunner()
SMALL = ["model.depth=6", "model.width=8", "data.batch_size=4"]


def small_run(*overrides, seeds=3, name=None):
    items = SMALL + [f"seeds={seeds}", *overrides] + ([f"name={name}"] if name else [])
    return run(load_config("deep50", items))


def concat(results, name):
    """What a sweep/compare results dir holds: the runs' rows stacked (variant labels each point)."""
    return RunResult(
        grads=pd.concat([r.grads for r in results], ignore_index=True),
        params=pd.concat([r.params for r in results], ignore_index=True),
        summary=pd.concat([r.summary for r in results], ignore_index=True),
        config={"name": name},
        meta=dict(results[0].meta),
    )


def relabel(result, variant):
    for df in (result.grads, result.params, result.summary):
        df["variant"] = variant
    return result


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A depth x residual grid, 2 seeds per point, written like a sweep."""
    points = []
    for depth in (1, 2, 4, 6):
        for residual in ("false", "true"):
            r = small_run(f"model.depth={depth}", f"model.residual={residual}", seeds=2)
            points.append(relabel(r, f"deep50[depth={depth},residual={residual}]"))
    result = concat(points, "deep50-sweep")
    path = tmp_path_factory.mktemp("sweep") / "s"
    write_run(result, path)
    return path


def line(ax, gid):
    found = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, [ln.get_gid() for ln in ax.get_lines()]
    return found[0]


def test_profile_line_is_the_csv_median_and_band_is_min_max(tmp_path):
    write_run(small_run(seeds=3), tmp_path / "r")
    grads = pd.read_csv(tmp_path / "r" / "grads.csv")
    ax = profile_figure(grads).axes[0]
    expected = grads.groupby("layer")["input_grad_norm"]
    y = line(ax, "median:deep50").get_ydata()
    np.testing.assert_array_equal(y, expected.median().to_numpy())
    assert ax.get_yscale() == "log"
    bands = [c for c in ax.collections if c.get_gid() == "band:deep50"]
    assert len(bands) == 1
    verts = bands[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(verts.min(), expected.min().min()) and np.isclose(verts.max(), expected.max().max())
    # fixed axes: whole decades covering the data and the guides the data come within a decade of
    lo, hi = ax.get_ylim()
    assert math.log10(lo).is_integer() and math.log10(hi).is_integer()
    last = np.median(grads[grads.layer == 5]["input_grad_norm"])
    near = [
        (name, last * f)
        for name, f in (("vanishing", VANISHING), ("exploding", EXPLODING))
        if expected.min().min() / 10 <= last * f <= expected.max().max() * 10
    ]
    assert lo <= min([expected.min().min()] + [v for _, v in near])
    assert hi >= max([expected.max().max()] + [v for _, v in near])
    guides = {ln.get_gid(): ln.get_ydata()[0] for ln in ax.get_lines() if str(ln.get_gid()).startswith("guide")}
    assert guides == {f"guide-{name}:deep50": pytest.approx(v) for name, v in near}


def test_one_seed_plots_the_values_themselves_and_no_band():
    result = small_run(seeds=1)
    ax = profile_figure(result.grads).axes[0]
    np.testing.assert_array_equal(line(ax, "median:deep50").get_ydata(), result.grads["input_grad_norm"].to_numpy())
    assert not [c for c in ax.collections if str(c.get_gid()).startswith("band")]


def test_axes_span_every_line_not_one():
    a = small_run(seeds=1, name="plain")
    b = small_run("model.init.scale=0.1", seeds=1, name="small")
    grads = pd.concat([a.grads, b.grads], ignore_index=True)
    ax = profile_figure(grads, guides=False).axes[0]
    lo, hi = ax.get_ylim()
    values = grads["input_grad_norm"]
    assert lo <= values.min() and hi >= values.max()
    assert (lo, hi) == log_limits(values)


def test_chain_reference_is_the_closed_form():
    """Constant weight 0.9, width 1, identity: the reference line is 0.9^(depth-l), computed exactly."""
    from resflow.demo import chain_config

    result = run(chain_config(20, 0.9))
    fig = figures(result)["profile"]
    ax = fig.axes[0]
    exact = [float(Fraction(0.9) ** (20 - layer)) for layer in range(20)]
    np.testing.assert_allclose(line(ax, "closed-form").get_ydata(), exact, rtol=1e-12)
    np.testing.assert_allclose(line(ax, "median:chain-0.9-pow-20").get_ydata(), exact, rtol=1e-12)
    assert "0.9^(depth−l)" in line(ax, "closed-form").get_label()


def test_no_closed_form_for_a_tanh_stack():
    result = small_run(seeds=1)
    ax = figures(result)["profile"].axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_gid() == "closed-form"]


def test_predicted_column_is_drawn_dashed():
    result = small_run(seeds=2)
    grads = result.grads.assign(predicted_input_grad_norm=lambda d: 2.0 ** d["layer"])
    ax = profile_figure(grads).axes[0]
    pred = line(ax, "predicted:deep50")
    assert pred.get_linestyle() == "--"
    np.testing.assert_array_equal(pred.get_ydata(), 2.0 ** np.arange(6))


def test_non_finite_values_still_plot_and_are_marked(tmp_path):
    result = small_run(seeds=2)
    grads = result.grads  # non-finite values as a run records them (written by resflow: meta.json vouches for them)
    grads.loc[(grads.seed == 0) & (grads.layer == 1), "input_grad_norm"] = float("inf")
    grads.loc[(grads.seed.isin([0, 1])) & (grads.layer == 3), "input_grad_norm"] = float("nan")
    write_run(result, tmp_path / "r")
    out = runner.invoke(app, ["plot", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    ax = profile_figure(pd.read_csv(tmp_path / "r" / "grads.csv")).axes[0]
    marks = [c for c in ax.collections if "non-finite" in str(c.get_label())]
    assert len(marks) == 1
    np.testing.assert_array_equal(sorted(marks[0].get_offsets()[:, 0]), [1.0, 3.0])
    y = line(ax, "median:deep50").get_ydata()
    assert y[1] == grads[(grads.seed == 1) & (grads.layer == 1)]["input_grad_norm"].iloc[0]  # finite seed kept
    assert math.isnan(y[3])  # no finite seed: a gap, marked above


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_run_writes_valid_pngs_of_the_expected_size(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "deep50", "--out", str(out), *sum((["--set", s] for s in SMALL), [])])
    assert result.exit_code == 0, result.output
    assert "profile.png" in result.output
    for name in ("profile.png", "params.png"):
        assert png_size(out / name) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
    assert not list(out.glob(".*"))  # no temp files left behind


def test_no_plots_writes_no_figures(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "deep50", "--out", str(out), "--no-plots", *sum((["--set", s] for s in SMALL), [])])
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.png")) and (out / "grads.csv").is_file()


def test_plot_command_on_a_sweep_dir(sweep_dir):
    for png in sweep_dir.glob("*.png"):
        png.unlink()
    out = runner.invoke(app, ["plot", str(sweep_dir)])
    assert out.exit_code == 0, out.output
    assert {p.name for p in sweep_dir.glob("*.png")} == {"profile.png", "params.png", "depth.png", "heatmap.png"}


def test_depth_curve_is_the_summary_median_per_depth(sweep_dir):
    summary = read_run(sweep_dir).summary
    ax = depth_figure(summary).axes[0]
    assert ax.get_yscale() == "log"
    for residual in (False, True):
        ln = line(ax, f"median:residual={str(residual).lower()}")
        sub = summary[summary.residual == residual].groupby("depth")["grad_ratio"].median()
        np.testing.assert_array_equal(ln.get_xdata(), sub.index.to_numpy())
        np.testing.assert_array_equal(ln.get_ydata(), sub.to_numpy())
    assert sum(1 for c in ax.collections if c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection")) == 2
    lo, hi = ax.get_ylim()
    assert lo <= summary.grad_ratio.min() and hi >= summary.grad_ratio.max()
    guides = {ln.get_gid() for ln in ax.get_lines() if str(ln.get_gid()).startswith("guide")}
    for name, f in (("vanishing", VANISHING), ("exploding", EXPLODING)):  # drawn when the data come within 10x
        near = summary.grad_ratio.min() / 10 <= f <= summary.grad_ratio.max() * 10
        assert (f"guide-{name}" in guides) == near and (not near or lo <= f <= hi)


def test_heatmap_cells_are_median_log10_ratio_centred_on_zero(sweep_dir):
    summary = read_run(sweep_dir).summary
    fig = heatmap_figure(summary, "depth", "residual")
    image = fig.axes[0].get_images()[0]
    expected = summary.pivot_table(index="residual", columns="depth", values="log10_grad_ratio", aggfunc="median")
    np.testing.assert_allclose(np.asarray(image.get_array()), expected.to_numpy(), rtol=1e-12)
    assert image.norm.vcenter == 0 and image.norm.vmin == -image.norm.vmax
    assert len(fig.axes) == 2  # the colorbar


def test_params_view_is_the_params_csv(sweep_dir):
    params = read_run(sweep_dir).params
    fig = params_figure(params)
    variants = list(params.variant.unique())
    assert len([a for a in fig.axes if a.get_visible()]) == 6  # capped, evenly spaced, first and last kept
    first = fig.axes[0]
    got = line(first, f"median:{variants[0]}:linear.weight").get_ydata()
    want = params[(params.variant == variants[0]) & (params.param == "linear.weight")].groupby("layer")["grad_norm"].median()
    np.testing.assert_array_equal(got, want.to_numpy())
    assert {a.get_ylim() for a in fig.axes if a.get_visible()} == {first.get_ylim()}  # one y-axis for all panels


def test_plot_command_on_a_compare_dir(tmp_path):
    result = concat([small_run(seeds=2, name="plain"), small_run("model.residual=true", seeds=2, name="resid")], "cmp")
    write_run(result, tmp_path / "c")
    out = runner.invoke(app, ["plot", str(tmp_path / "c")])
    assert out.exit_code == 0, out.output
    assert {p.name for p in (tmp_path / "c").glob("*.png")} == {"profile.png", "params.png"}
    out = runner.invoke(app, ["plot", str(tmp_path / "c"), "--format", "svg"])
    assert out.exit_code == 0 and (tmp_path / "c" / "profile.svg").read_text().lstrip().startswith("<?xml")
    figs = figures(read_run(tmp_path / "c"))
    labels = [ln.get_label() for ln in figs["profile"].axes[0].get_lines() if str(ln.get_gid()).startswith("median")]
    assert labels[0].startswith("plain (residual=false)") and labels[1].startswith("resid (residual=true)")


def test_plot_command_on_a_dir_that_is_not_results(tmp_path):
    out = runner.invoke(app, ["plot", str(tmp_path)])
    assert out.exit_code == 2
    assert "not a resflow results dir" in out.output and len(out.output.strip().splitlines()) == 1
    out = runner.invoke(app, ["plot", str(tmp_path / "missing")])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_titles_say_config_seeds_and_dtype():
    fig = figures(small_run(seeds=3))["profile"]
    assert fig._suptitle.get_text().startswith("deep50: 6 × mlp width 8, tanh")
    caption = fig._supxlabel.get_text()
    assert "float32" in caption and "seeds 0…2 (3)" in caption


def test_plots_never_import_torch(cli_env):
    import subprocess
    import sys

    code = "import sys, resflow.report.figures.plots, resflow.report.terminal.run; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env)
    assert out.stdout.strip() == "False"


def test_sparkline_is_log10_on_the_fixed_scale():
    from resflow.report.terminal.run import BAR_HI, BAR_LO, SPARK_LEVELS, sparkline

    # levels: 8 equal slices of [BAR_LO, BAR_HI] = [-16, 4], 2.5 decades each
    assert sparkline([1e-15, 1e-12, 1e-9, 1e-7, 1e-4, 1e-2, 1e1, 10**3.5]) == SPARK_LEVELS
    assert sparkline([1.0] * 5) == SPARK_LEVELS[int((0 - BAR_LO) / (BAR_HI - BAR_LO) * 8)] * 5  # flat stays flat
    assert sparkline([0.0, 1e-20, float("nan"), float("inf"), 1e9]) == "  !!█"
    line = sparkline(10.0 ** np.linspace(-12, 2, 50))  # binned to 24 characters, rising
    assert len(line) == 24 and list(line) == sorted(line, key=SPARK_LEVELS.index)


def test_loss_curve_is_train_csv_median_per_step():
    rng = np.random.default_rng(0)
    rows = [
        dict(
            variant=v,
            seed=s,
            step=t,
            loss=float(np.exp(-t / 50) * (1 + 0.1 * rng.random()) * (2 if v == "b" else 1)),
            eval_loss=(0.5 if t % 20 == 0 else np.nan),
        )
        for v in ("a", "b")
        for s in range(3)
        for t in range(0, 101, 5)
    ]
    train = pd.DataFrame(rows)
    ax = loss_figure(train).axes[0]
    for v in ("a", "b"):
        want = train[train.variant == v].groupby("step")["loss"].median()
        ln = line(ax, f"loss:{v}")
        np.testing.assert_array_equal(ln.get_xdata(), want.index.to_numpy())
        np.testing.assert_array_equal(ln.get_ydata(), want.to_numpy())
        np.testing.assert_array_equal(line(ax, f"eval_loss:{v}").get_xdata(), np.arange(0, 101, 20))
    assert ax.get_yscale() == "log"


def test_layer_by_step_heatmap_is_log10_of_the_median():
    from resflow.report.figures.plots import steps_heatmap_figure

    base = small_run(seeds=2).grads
    grads = pd.concat(
        [base.assign(step=t, input_grad_norm=base["input_grad_norm"] * 10.0 ** (t / 10)) for t in (0, 10, 20)], ignore_index=True
    )
    fig = steps_heatmap_figure(grads)
    mesh = fig.axes[0].collections[0]
    want = np.log10(grads.groupby(["layer", "step"])["input_grad_norm"].median().unstack("step").to_numpy())
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(want.shape), want, rtol=1e-12)


def test_legend_ratio_is_the_summary_median_ratio():
    a, b = small_run(seeds=3, name="plain"), small_run("model.residual=true", seeds=3, name="resid")
    result = concat([a, b], "cmp")
    ax = profile_figure(result.grads).axes[0]
    for r in (a, b):
        name = r.summary["variant"].iloc[0]
        want = f"(first/last {r.summary['grad_ratio'].median():.3g})"
        assert line(ax, f"median:{name}").get_label().endswith(want)


def test_sweep_and_compare_tables_carry_sparklines(sweep_dir):
    from rich.console import Console

    from resflow.report.terminal.run import site_stats, sparkline
    from resflow.report.terminal.sweep import compare_profiles, spark_scale, sweep_table

    result = read_run(sweep_dir)
    console = Console(width=200, record=True)
    console.print(sweep_table(result.summary, ["residual", "depth"], grads=result.grads))
    console.print(compare_profiles(result.grads))
    text = console.export_text()
    meds = {v: site_stats(g)["median"] for v, g in result.grads.groupby("variant")}
    lo, hi = spark_scale(meds.values())
    for med in meds.values():
        assert sparkline(med, lo=lo, hi=hi, width=8) in text and sparkline(med, lo=lo, hi=hi) in text


def test_sweep_and_compare_commands_write_figures_unless_no_plots(tmp_path):
    small = [a for s in SMALL for a in ("--set", s)] + ["--seeds", "2", "--workers", "1"]
    out = runner.invoke(
        app,
        [
            "sweep",
            "deep50",
            "--over",
            "model.depth=1,2,3",
            "--over",
            "model.residual=false,true",
            "--out",
            str(tmp_path / "s"),
            *small,
        ],
    )
    assert out.exit_code == 0, out.output
    assert {p.name for p in (tmp_path / "s").glob("*.png")} == {"profile.png", "params.png", "depth.png", "heatmap.png"}
    assert "depth.png, heatmap.png" in out.output
    fig = figures(read_run(tmp_path / "s"))["heatmap"]
    assert fig.axes[0].get_xlabel() == "depth" and fig.axes[0].get_ylabel() == "residual"
    out = runner.invoke(app, ["compare", "deep50", "deep50-residual", "--out", str(tmp_path / "c"), *small])
    assert out.exit_code == 0, out.output
    assert {p.name for p in (tmp_path / "c").glob("*.png")} == {"profile.png", "params.png"}
    out = runner.invoke(app, ["compare", "deep50", "deep50-residual", "--out", str(tmp_path / "n"), "--no-plots", *small])
    assert out.exit_code == 0 and not list((tmp_path / "n").glob("*.png"))


def test_panel_titles_stay_inside_their_panels():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    variants = [f"deep50[depth={d},init_scale={s},residual={r}]" for d in (10, 20) for s in (0.5, 1) for r in ("false", "true")]
    params = pd.DataFrame(
        [
            dict(variant=v, seed=0, step=0, layer=l, param=p, grad_norm=1.0 + l, value_norm=1.0)
            for v in variants
            for l in range(3)
            for p in ("linear.weight", "linear.bias")
        ]
    )
    fig = params_figure(params, title="deep50")
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title(loc="left")]
    assert len(panels) == 6
    for ax in panels:
        title = ax.get_title(loc="left")
        assert title.startswith("depth=") and "deep50[" not in title  # the settings; the figure's title names the config
        box = ax._left_title.get_window_extent(renderer)  # (matplotlib's Text for loc="left")
        assert box.x1 <= ax.get_window_extent(renderer).x1 + 2, title  # no spill into the next panel
