"""Issue 20: output that was wrong or misleading for a researcher, and the friction around it.

Each test here failed on the code before the fix (commit af57dff)."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config import load_config

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


TRAIN_MLP = dict(
    name="trainy",
    seed=0,
    seeds=1,
    dtype="float64",
    model=dict(depth=3, width=8),
    data=dict(batch_size=8),
    train=dict(steps=4, lr=1e-2, eval_batches=1),
)


# 1. a sweep of a training config prints the loss table (and `show` does), and says which step its
# gradient table is from


def test_sweep_of_a_training_config_prints_the_loss_table_and_the_step(tmp_path):
    cfg = write_yaml(tmp_path / "trainy.yaml", TRAIN_MLP)
    out = tmp_path / "s"
    ran = invoke(
        "sweep", cfg, "--over", "model.residual=false,true", "--over", "model.depth=3", "-j", "1", "--out", out, "--no-plots"
    )
    assert ran.exit_code == 0, ran.output
    for text in (ran.output, invoke("show", out).output):
        assert "above floor" in text  # the loss table's column
        assert "trainy sweep: 2 points (‖∂loss/∂x‖ after training: step 4)" in " ".join(text.split())


# 2. the theory's error stays meaningful at the critical point (predicted first/last ≈ 1)


def _summary(rows):
    base = dict(seed=0, step=0, finite=True, gain_per_layer=1.0)
    return pd.DataFrame([{**base, **r} for r in rows])


def _text(renderable, width=200):
    from rich.console import Console

    console = Console(width=width, record=True)
    console.print(renderable)
    return " ".join(console.export_text().split())


def test_sweep_theory_error_is_defined_and_honest_near_the_critical_point():
    from resflow.report.terminal.sweep import sweep_table

    # measured vs predicted first/last: at the critical point (predicted 1.0, 1.02) the measurement is off
    # by 2x and by 1.5x; far from it (1e-6) by 1.1x. A relative error of the log printed "—" and 100 %+ here.
    summary = _summary(
        [
            dict(variant="a", scale=1.0, grad_ratio=0.5, predicted_grad_ratio=1.0),
            dict(variant="b", scale=1.1, grad_ratio=1.53, predicted_grad_ratio=1.02),
            dict(variant="c", scale=2.0, grad_ratio=1.1e-6, predicted_grad_ratio=1e-6),
        ]
    )
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(sweep_table(summary, ["scale"]))
    text = console.export_text()
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    header = next(line for line in text.splitlines() if "scale" in line)
    col = [c.strip() for c in header.split("┃")[1:-1]].index("meas/pred")
    assert [r[col] for r in rows] == ["0.5", "1.5", "1.1"]  # measured / predicted, computed by hand above
    assert "measured over predicted" in _text(sweep_table(summary, ["scale"]), 300)


def test_run_theory_line_states_the_error_at_the_critical_point():
    from resflow.theory.overlay import comparison_line

    summary = _summary([dict(variant="a", depth=11, grad_ratio=0.5, predicted_grad_ratio=1.0)])
    line = comparison_line(summary, "plain tanh")
    assert "measured/predicted 0.5" in line and "per layer" in line
    assert f"{math.log(0.5) / 10:+.2g}" in line  # ln(0.5) over the 10 layers between first and last


# 3. a deep transformer's table shows both sublayers of every layer it shows


def _transformer_grads(depth, variants=("a", "b")):
    rows = [
        dict(variant=v, seed=0, step=0, layer=layer, sublayer=sub, input_grad_norm=(k + 1.0) * (1 + 0.5 * (sub == "ffn")))
        for k, v in enumerate(variants)
        for layer in range(depth)
        for sub in ("attn", "ffn")
    ]
    return pd.DataFrame(rows)


def _table_rows(table):
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    return rows, " ".join(text.split())


@pytest.mark.parametrize("which", ["compare", "run"])
def test_deep_transformer_table_shows_attn_and_ffn_of_each_shown_layer(which):
    from resflow.report.terminal.run import run_table
    from resflow.report.terminal.sweep import compare_table

    grads = _transformer_grads(48)
    table = compare_table(grads) if which == "compare" else run_table(grads[grads["variant"] == "a"])
    rows, text = _table_rows(table)
    shown = [(r[0], r[1]) for r in rows if r[0] != "⋮"]
    layers = list(dict.fromkeys(layer for layer, _ in shown))
    assert 3 <= len(layers) < 48 and layers[0] == "0" and layers[-1] == "47"
    assert shown == [(layer, sub) for layer in layers for sub in ("attn", "ffn")]  # both sublayers of each
    assert "of 48 shown" in text and "of 96" not in text


# 4. compare's sparklines show a 3.6x difference between profiles (they were solid blocks for both)


def test_compare_sparklines_tell_profiles_3_6x_apart():
    from resflow.report.terminal.sweep import compare_profiles

    depth = 24
    rows = [
        dict(
            variant=v,
            seed=0,
            step=0,
            layer=layer,
            sublayer="mlp",
            input_grad_norm=1000.0 * (3.6 ** ((depth - 1 - layer) / (depth - 1)) if v == "rising" else 1.0),
        )
        for v in ("flat", "rising")
        for layer in range(depth)
    ]
    rows_text, _ = _table_rows(compare_profiles(pd.DataFrame(rows)))
    lines = {r[0]: r[1] for r in rows_text}
    assert len(set(lines["flat"])) == 1  # a flat profile draws flat
    assert len(set(lines["rising"])) >= 4  # 3.6x over the stack spans several levels
    assert lines["rising"][0] != lines["flat"][0] and lines["rising"][-1] == lines["flat"][-1]  # same last layer


# 5. one key varying plus a pinned (one-value) axis: a line of the ratio against that key, no heatmap


def _tiny_mlp(*overrides):
    return load_config(dict(name="tiny", seeds=2, model=dict(depth=4, width=8), data=dict(batch_size=4)), list(overrides))


def test_sweep_with_one_varying_key_and_a_pinned_one_draws_a_line_not_a_heatmap(tmp_path):
    from matplotlib.colors import to_rgb

    from resflow.report.figures.plots import _colors, figures
    from resflow.sweep import make_plan, run_sweep

    plan = make_plan(_tiny_mlp(), (), ["model.init.scale=0.5,1,1.5,2", "model.depth=4"])
    result = run_sweep(plan, tmp_path / "s", workers=1).result
    figs = figures(result)
    assert "heatmap" not in figs and "ratio" in figs
    ax = figs["ratio"].axes[0]
    assert ax.get_xlabel() == "init_scale"
    (line,) = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("median:")]
    want = result.summary.groupby("init_scale")["grad_ratio"].median()
    assert list(line.get_xdata()) == [0.5, 1.0, 1.5, 2.0] and np.allclose(line.get_ydata(), want.to_numpy())
    # the pinned depth does not shade the profile's lines (all pale before): each variant its own full hue
    prof = figs["profile"].axes[0]
    colors = [to_rgb(ln.get_color()) for ln in prof.get_lines() if (ln.get_gid() or "").startswith("median:")]
    assert colors == [to_rgb(c) for c in _colors(4)]


# 6. figures a reader can read at 2, 4 and 10 variants


def _flat_run(variants=1, depth=12):
    from resflow.results import RunResult

    rows = [
        dict(
            variant=f"v{k}",
            seed=s,
            step=0,
            layer=layer,
            sublayer="mlp",
            depth=depth,
            input_grad_norm=(1 + 0.1 * k) * (1 + 0.01 * s) * 1.02**layer,
        )
        for k in range(variants)
        for s in range(2)
        for layer in range(depth)
    ]
    grads = pd.DataFrame(rows)
    return RunResult(grads=grads, params=pd.DataFrame(), summary=pd.DataFrame(), config={}, meta={})


def test_profile_axis_is_not_stretched_by_far_threshold_guides():
    from resflow.report.figures.plots import profile_figure

    ax = profile_figure(_flat_run().grads).axes[0]  # values 1 … 1.3: the thresholds (×1e-3, ×1e3) are far away
    lo, hi = ax.get_ylim()
    assert lo >= 1e-2 and hi <= 1e2  # it was 1e-3 … 1e4 (data squashed into a sliver)
    assert not [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("guide-")]


def test_profile_keeps_a_threshold_the_data_come_near():
    from resflow.report.figures.plots import profile_figure
    from resflow.results import RunResult

    rows = [
        dict(variant="v", seed=0, step=0, layer=layer, sublayer="mlp", input_grad_norm=10.0 ** (layer - 5)) for layer in range(6)
    ]  # 1e-5 … 1: the vanishing guide at 1e-3 is inside the data
    ax = profile_figure(RunResult(grads=pd.DataFrame(rows), params=None, summary=None).grads).axes[0]
    gids = [ln.get_gid() for ln in ax.get_lines()]
    assert "guide-vanishing:v" in gids and "guide-exploding:v" not in gids


@pytest.mark.parametrize("n", [2, 4, 10])
def test_depth_figure_legend_never_covers_the_data_and_title_fits(n):
    from resflow.report.figures.plots import depth_figure

    rows = [
        dict(variant=f"p{k}-{d}", seed=0, depth=d, init_scale=0.5 + k / 4, grad_ratio=(0.5 + k / 8) ** d)
        for k in range(n)
        for d in (2, 4, 8, 16)
    ]
    fig = depth_figure(
        pd.DataFrame(rows), ["depth", "init_scale"], title="a long title: " + " vs ".join(f"config-number-{k}" for k in range(6))
    )
    fig.canvas.draw()
    ax = fig.axes[0]
    width = fig.bbox.width
    assert fig._suptitle.get_window_extent().x1 <= width + 1  # wrapped, not cut off
    if n > 4:
        assert ax.get_legend() is None and fig.legends  # beside the axes
        assert fig.legends[0].get_window_extent().x0 >= ax.get_window_extent().x1 - 1
        assert fig._suptitle.get_window_extent().x1 <= fig.legends[0].get_window_extent().x0 + 1


def test_steps_heatmap_titles_fit_in_a_four_way_compare():
    from resflow.report.figures.plots import steps_heatmap_figure

    names = ["train-postln", "train-postln-warmup", "train-preln", "train-preln-warmup"]
    rows = [
        dict(variant=v, seed=0, step=t, layer=layer, sublayer=sub, input_grad_norm=1.0 + t + layer)
        for v in names
        for t in (0, 10, 20)
        for layer in range(3)
        for sub in ("attn", "ffn")
    ]
    fig = steps_heatmap_figure(pd.DataFrame(rows), title="compare: " + " vs ".join(names) + ": 2 × transformer width 32")
    fig.canvas.draw()
    assert fig._suptitle.get_window_extent().x1 <= fig.bbox.width + 1
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left").replace("\n", "") for ax in panels] == names
    for ax in panels:
        assert ax.title._text == "" and ax._left_title.get_window_extent().x1 <= ax.get_window_extent().x1 + 1
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert all(float(t).is_integer() for t in ticks)  # whole layers, not 0.25, 0.75


def test_shallow_depth_shades_stay_visible():
    from resflow.report.figures.plots import variant_styles

    rows = [dict(variant=f"s[d={d},k={k}]", depth=d, k=k) for k in (0, 1) for d in (1, 2, 4, 8, 16, 32, 50)]
    _, colors = variant_styles(pd.DataFrame(rows), [r["variant"] for r in rows], ["depth", "k"])
    darkness = [max(1 - c for c in rgb) for rgb in colors.values()]  # how far from white the palest channel is
    assert min(darkness) >= 0.35  # the shallowest depth was ~0.26 away from white: nearly invisible


def test_profile_axis_label_has_a_subscript():
    from resflow.report.figures.plots import profile_figure

    assert "$x_l$" in profile_figure(_flat_run().grads).axes[0].get_ylabel()


# 7. the default loss is the one the theory assumes (a random output direction), not the sum of outputs


HE_RELU = dict(
    name="he", seeds=4, model=dict(depth=30, width=128, activation="relu", init=dict(scheme="kaiming")), data=dict(batch_size=32)
)


def test_default_loss_is_random_and_a_he_relu_stack_meets_its_prediction():
    from resflow.experiment import run

    cfg = load_config(HE_RELU)
    assert cfg.loss == "random"
    summary = run(cfg).summary
    measured = float(np.median(summary["grad_ratio"]))
    predicted = float(summary["predicted_grad_ratio"].iloc[0])
    assert predicted == pytest.approx(1.0, abs=1e-6)  # He init, ReLU: χ₁ = 1 exactly (σ_w² = 2, no bias)
    assert abs(math.log(measured / predicted)) < math.log(1.6)  # width 128: finite-width spread, no bias
    # the sum of outputs is not a random direction: the same stack measures a ratio several times larger,
    # and the theory line says why there is no prediction for it
    summed = run(load_config({**HE_RELU, "loss": "sum"}))
    assert float(np.median(summed.summary["grad_ratio"])) > 2 * measured
    assert "not a random direction" in summed.meta["theory"] and "loss: random" in summed.meta["theory"]


def test_bundled_configs_whose_docs_use_the_sum_keep_it():
    for name in ("deep50", "deep50-residual", "theory-tanh-critical", "theory-residual-relu"):
        assert load_config(name).loss == "sum"


# 10. a sweep over X sweeps X (no depth axis added behind the user's back), and the plan is printed first


def test_a_sweep_over_init_scale_sweeps_init_scale_only_and_prints_its_plan(tmp_path):
    out = tmp_path / "s"
    ran = invoke(
        "sweep",
        "deep50",
        "--over",
        "model.init.scale=1,2",
        "--set",
        "model.depth=5",
        "--set",
        "model.width=8",
        "--set",
        "data.batch_size=4",
        "--seeds",
        2,
        "-j",
        1,
        "--out",
        out,
        "--no-plots",
    )
    assert ran.exit_code == 0, ran.output
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["init_scale"].unique()) == [1.0, 2.0] and set(summary["depth"]) == {5}
    assert len(summary) == 2 * 2  # 2 points × 2 seeds
    plan_line = ran.output.splitlines()[0]  # before any point ran
    assert plan_line.startswith("sweep deep50: 2 points × 2 seeds = 4 runs; model.init.scale = 1, 2;")
    assert "model.depth = 5 throughout" in plan_line and str(out) in plan_line


# 11. the spread across seeds: SD of log10 ratio and IQR in summary.csv and the sweep table; threshold
# crossing in the depth story


def test_summary_csv_has_the_seed_spread_checked_against_numpy(tmp_path):
    from resflow.experiment import run
    from resflow.results import write_run

    result = run(_tiny_mlp("seeds=5", "model.depth=6"))
    write_run(result, tmp_path / "r")
    s = pd.read_csv(tmp_path / "r" / "summary.csv")
    logs = np.log10(s["grad_ratio"].to_numpy())
    want_sd = math.sqrt(sum((x - logs.mean()) ** 2 for x in logs) / (len(logs) - 1))  # by hand, ddof 1
    ranked = sorted(s["grad_ratio"])  # 5 values: the quartiles are the 2nd and 4th (numpy's linear rule)
    assert s["log10_ratio_sd"].tolist() == pytest.approx([want_sd] * 5, rel=1e-12)
    assert s["ratio_q25"].tolist() == pytest.approx([ranked[1]] * 5) and s["ratio_q75"].tolist() == pytest.approx([ranked[3]] * 5)


def test_sweep_table_shows_sd_and_iqr_and_the_depth_story_the_crossing():
    from resflow.report.terminal.sweep import depth_story, sweep_table

    depths = [2, 4, 8, 16, 32]
    rows = [
        dict(
            variant=f"p{d}",
            depth=d,
            seed=s,
            step=0,
            finite=True,
            gain_per_layer=0.5,
            grad_ratio=0.5 ** (d - 1) * 10 ** (0.1 * (s - 1) * d / 8),
        )
        for d in depths
        for s in range(3)
    ]
    summary = pd.DataFrame(rows)
    rows_text, text = _table_rows(sweep_table(summary, ["depth"]))
    header = "SD log10" in text and "IQR" in text
    assert header
    # depth 16: log10 ratios of the 3 seeds are m - 0.2, m, m + 0.2: SD 0.2
    row16 = next(r for r in rows_text if r[0] == "16")
    assert "0.20" in row16
    (line,) = depth_story(summary, ["depth"])
    # median ratio 0.5^(d-1): 0.0078 at depth 8, 3.1e-5 at 16: first below 1e-3 at 16; the fit
    # (ln ratio = (d-1) ln 0.5) crosses 1e-3 at d = 1 + ln(1e-3)/ln(0.5) = 10.97
    assert "below 0.001 (vanishing) from depth 16 of those swept" in line
    assert f"at depth ≈ {1 + math.log(1e-3) / math.log(0.5):.3g}" in line


# 8. a long compare is not silent: a plan line, then progress lines on stderr (plain lines off a terminal)


def test_a_long_compare_shows_progress_on_stderr(tmp_path, cli_env, resflow_cmd):
    import subprocess

    for name, residual in (("slow-a", False), ("slow-b", True)):
        write_yaml(
            tmp_path / f"{name}.yaml",
            {
                **TRAIN_MLP,
                "name": name,
                "model": dict(depth=8, width=64, residual=residual),
                "data": dict(batch_size=64),
                "train": dict(steps=60, lr=1e-3, eval_batches=1),
            },
        )
    env = dict(cli_env, RESFLOW_PROGRESS_SECONDS="0.2")
    proc = subprocess.run(
        [
            *resflow_cmd,
            "compare",
            str(tmp_path / "slow-a.yaml"),
            str(tmp_path / "slow-b.yaml"),
            "-j",
            "1",
            "--out",
            str(tmp_path / "c"),
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err[0].startswith("compare: 2 configs × 1 seeds, training 60 steps each on 1 worker → ")
    assert any(line.startswith("configs 1/2 done") and "(slow-a)" in line and "left" in line for line in err)
    assert any(line.startswith("configs 2/2 done") and "(slow-b)" in line for line in err)
    assert any("still running" in line and "elapsed" in line for line in err)  # a heartbeat while a config ran
    assert "compare: slow-a vs slow-b" in proc.stdout and "configs" not in proc.stdout  # progress never on stdout


# 9. a compare REF with its own overrides: one changed key, no copied YAML


def test_compare_reference_with_its_own_overrides(tmp_path):
    from resflow.compare import load_refs
    from resflow.experiment import run

    sets = ["model.depth=2", "model.width=16", "data.batch_size=2", "data.seq_len=4"]
    configs = load_refs(["microgpt", "microgpt[model.init.zero_out=false,model.heads=2]"], sets)
    assert list(configs) == ["microgpt", "microgpt+init_zero_out=false+heads=2"]
    changed = configs["microgpt+init_zero_out=false+heads=2"]
    assert changed.model.init.zero_out is False and changed.model.heads == 2 and changed.model.depth == 2
    # the same as writing that YAML by hand: the reference is load_config with the overrides
    direct = run(load_config("microgpt", sets + ["model.init.zero_out=false", "model.heads=2"]))
    mine = run(changed)
    assert mine.grads["input_grad_norm"].tolist() == direct.grads["input_grad_norm"].tolist()
    out = tmp_path / "c"
    ran = invoke(
        "compare",
        "deep50",
        "deep50[model.residual=true]",
        *[a for s in ["model.depth=3", "model.width=4", "data.batch_size=2", "seeds=1"] for a in ("--set", s)],
        "-j",
        1,
        "--out",
        out,
        "--no-plots",
    )
    assert ran.exit_code == 0, ran.output
    assert list(dict.fromkeys(pd.read_csv(out / "grads.csv")["variant"])) == ["deep50", "deep50+residual=true"]


def test_compare_reference_with_a_bad_override_is_one_line(tmp_path):
    ran = runner.invoke(app, ["compare", "deep50", "deep50[model.dept=3]", "--out", str(tmp_path / "c")])
    assert ran.exit_code == 2 and "model.dept" in ran.output and "deep50[model.dept=3]" in ran.output
    assert not (tmp_path / "c").exists()


# 12. the critical init scale for the config's own scheme: `resflow theory CONFIG --critical`


@pytest.mark.parametrize(
    "scheme, activation, bias, want",
    [
        ("kaiming", "relu", False, 1.0),  # He init is critical for relu: σ_w² = 2·scale² = 2
        ("normal", "relu", False, math.sqrt(2)),
        ("default", "relu", True, math.sqrt(6)),  # U(±1/√n): σ_w² = scale²/3 = 2 (relu's χ ignores σ_b²)
        ("normal", "tanh", False, 1.0),  # no bias: q* = 0, χ₁ = σ_w²·tanh'(0)² = scale²
        ("default", "tanh", False, math.sqrt(3)),
        ("xavier", "tanh", False, 1.0),
    ],
)
def test_critical_scale_closed_forms(scheme, activation, bias, want):
    from resflow.theory.predict import critical_scale

    cfg = load_config(dict(model=dict(depth=10, width=256, activation=activation, bias=bias, init=dict(scheme=scheme))))
    scale, text = critical_scale(cfg.model)
    assert scale == pytest.approx(want, rel=1e-9) and f"init {scheme}" in text


def test_theory_critical_command_and_the_scale_it_gives_is_critical():
    from resflow.theory.predict import predict

    ran = invoke("theory", "deep50", "--critical")
    assert ran.exit_code == 0 and ran.output.startswith("model.init.scale = ")
    scale = float(ran.output.split()[2])
    pred = predict(load_config("deep50", [f"model.init.scale={scale!r}"]))  # (σ_b² of `default` depends on the width)
    assert pred.phase == "critical" and pred.chi1 == pytest.approx(1.0, abs=1e-5)
    assert "critical model.init.scale for init default" in invoke("theory", "deep50").output
    bad = runner.invoke(app, ["theory", "pre-norm", "--critical"])
    assert bad.exit_code == 2 and "transformer" in bad.output


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_kaiming_mode_and_distribution_draw_what_torch_draws(mode, distribution):
    import torch
    from torch import nn

    from resflow.models.init import init_linears

    init = load_config(
        dict(model=dict(depth=1, width=4, init=dict(scheme="kaiming", scale=1.5, mode=mode, distribution=distribution)))
    ).model.init
    mine, ref = torch.empty(8, 32), torch.empty(8, 32)  # not square: fan_in 32, fan_out 8
    torch.manual_seed(3)
    init_linears([(mine, None)], init)
    torch.manual_seed(3)
    (nn.init.kaiming_uniform_ if distribution == "uniform" else nn.init.kaiming_normal_)(ref, mode=mode, nonlinearity="relu")
    assert torch.equal(mine, ref * 1.5)


def test_kaiming_options_with_another_scheme_are_a_one_line_error(tmp_path):
    ran = runner.invoke(app, ["run", "deep50", "--set", "model.init.mode=fan_out", "--out", str(tmp_path / "r")])
    assert ran.exit_code == 2 and "model.init.mode" in ran.output and "kaiming" in ran.output
    assert not (tmp_path / "r").exists()
