"""resflow compare (side by side, checked against direct runs) and resflow show (every kind of dir)."""

import math
import re

import pandas as pd
import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.compare import load_refs
from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.results.files import read_csv

pytestmark = pytest.mark.smoke  # also run at the lowest allowed dependency versions (.ci/run)

runner = Runner()
SETS = ["model.depth=6", "model.width=8", "data.batch_size=4", "seeds=2"]
SMALL = [a for s in SETS for a in ("--set", s)]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_compare_two_configs(tmp_path):
    out = tmp_path / "c"
    result = invoke("compare", "deep50", "deep50-residual", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    grads = read_csv(out / "grads.csv")  # every float exactly as written
    assert list(dict.fromkeys(grads["variant"])) == ["deep50", "deep50-residual"]
    # each config's rows equal a direct run of it (the reference: resflow.run)
    for name in ("deep50", "deep50-residual"):
        direct = run(load_config(name, SETS))
        mine = grads[grads["variant"] == name]
        assert mine["input_grad_norm"].tolist() == direct.grads["input_grad_norm"].tolist()
    # the headline names the config whose median first/last ratio is nearest 1, recomputed here
    summary = pd.read_csv(out / "summary.csv")
    med = summary.groupby("variant")["grad_ratio"].median()
    best = min(med.index, key=lambda v: abs(math.log10(med[v])))
    assert best == "deep50-residual"
    assert f"{best} keeps the first-layer gradient closest" in result.output
    # the table's ratio column for layer 0: residual median over plain median
    g0 = grads[grads["layer"] == 0].groupby("variant")["input_grad_norm"].median()
    ratio = g0["deep50-residual"] / g0["deep50"]
    row0 = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("0 "))
    assert f"{ratio:.3g}" in row0 or f"{ratio:.2e}" in row0


def test_compare_needs_two_configs_and_reports_bad_refs(tmp_path):
    one = invoke("compare", "deep50", "--out", tmp_path / "c")
    assert one.exit_code == 2 and "at least two configs" in one.output
    bad = invoke("compare", "deep50", "deep5O", "--out", tmp_path / "c")
    assert bad.exit_code == 2 and "did you mean 'deep50'" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_mlp_norm_placement_configs():
    configs = load_refs(["mlp-pre-norm", "mlp-post-norm"], [])
    assert list(configs) == ["mlp-pre-norm", "mlp-post-norm"]
    assert configs["mlp-pre-norm"].model.norm == "pre" and configs["mlp-post-norm"].model.norm == "post"
    assert all(c.model.residual and c.loss == "random" for c in configs.values())


def test_same_config_twice_gets_distinct_variants():
    configs = load_refs(["deep50", "deep50"], ["model.depth=2"])
    assert list(configs) == ["deep50", "deep50-2"]


def _table_lines(output: str) -> list[str]:
    return output.split("\nwrote ")[0].splitlines()  # the "wrote DIR/" line (maybe wrapped) is last


@pytest.mark.parametrize("kind", ["run", "sweep", "compare"])
def test_show_rerenders_every_kind(tmp_path, kind):
    out = tmp_path / kind
    args = {
        "run": ["run", "deep50", *SMALL],
        "sweep": ["sweep", "deep50", "--over", "model.residual=false,true", *SMALL, "--workers", 1],
        "compare": ["compare", "deep50", "deep50-residual", *SMALL],
    }[kind]
    made = invoke(*args, "--out", out)
    assert made.exit_code == 0, made.output
    shown = invoke("show", out)
    assert shown.exit_code == 0, shown.output
    # exactly what the command printed (progress lines aside), the run's title line included
    printed = [
        l
        for l in _table_lines(made.output)
        if not l.startswith(("points ", "sweep ", "configs ")) and not re.match(r"compare: \d+ configs", l)
    ]  # the plan and progress (stderr, mixed in here)
    assert printed == shown.output.splitlines()
    if kind == "run":
        assert shown.output.startswith("deep50: 6 × mlp width 8, tanh, no residual")


def test_show_refuses_what_is_not_a_results_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        result = invoke("show", path)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_show_on_an_unfinished_sweep_says_how_to_finish(tmp_path):
    out = tmp_path / "s"
    assert invoke("sweep", "deep50", "--over", "model.depth=1,2", *SMALL, "--workers", 1, "--out", out).exit_code == 0
    (out / "summary.csv").unlink()
    (out / "grads.csv").unlink()
    result = invoke("show", out)
    assert result.exit_code == 2 and "unfinished sweep (2 of 2 points)" in result.output and "--resume" in result.output


def test_tables_fit_an_80_column_terminal(tmp_path):
    from rich.console import Console

    from resflow.report.terminal.sweep import renderables
    from resflow.results.files import read_run

    out = tmp_path / "s"
    assert (
        invoke(
            "sweep",
            "deep50",
            "--over",
            "model.residual=false,true",
            "--over",
            "model.depth=1,2,4,6",
            *SMALL,
            "--workers",
            1,
            "--out",
            out,
        ).exit_code
        == 0
    )
    console = Console(width=80, record=True, file=open(tmp_path / "screen.txt", "w"))
    for item in renderables(read_run(out), width=80):
        console.print(item)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    table_rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(table_rows) == 8 and not any("…" in line for line in table_rows)  # nothing cut off
    assert "flag" in text and "gain" in text  # the last column is still there


@pytest.mark.parametrize(
    "factor, words",
    [
        (0.5, "vanishes exponentially"),
        (0.9, "shrinks"),
        (1.0, "stays level"),
        (1.05, "grows"),
        (1.5, "grows"),
        (2.0, "explodes exponentially"),
    ],
)
def test_depth_story_words_follow_the_fitted_factor(factor, words):
    from resflow.report.terminal.sweep import depth_story

    depths = [1, 2, 4, 8, 16]
    summary = pd.DataFrame(
        {
            "variant": [f"p{d}" for d in depths],
            "depth": depths,
            "seed": 0,
            "grad_ratio": [factor ** (d - 1) for d in depths],
            "gain_per_layer": factor,
            "finite": True,
        }
    )
    (line,) = depth_story(summary, ["depth"])
    assert f"(×{factor:.3g} per added layer): it {words} with depth" in line


@pytest.mark.parametrize(
    "factor, depths, words",
    [
        (1.0297, [10, 20, 50, 100], "grows"),  # x14 over 90 layers
        (1.005, [10, 20, 50, 100], "stays level"),  # x1.6
        (0.97, [10, 20, 50, 100], "shrinks"),  # x0.064
        (1.11, [1, 10, 25, 50], "grows"),  # x166: flagged points, yet under 1000x
        (1.2, [1, 10, 25, 50], "explodes exponentially"),
    ],
)  # x7,600
def test_depth_story_level_means_within_2x_over_the_depths_swept(factor, depths, words):
    from resflow.report.terminal.sweep import depth_story

    summary = pd.DataFrame(
        {
            "variant": [f"p{d}" for d in depths],
            "depth": depths,
            "seed": 0,
            "grad_ratio": [factor**d for d in depths],
            "gain_per_layer": factor,
            "finite": True,
        }
    )
    (line,) = depth_story(summary, ["depth"])
    assert f"it {words} with depth" in line


def test_sweep_table_says_no_gradient_for_all_zero_gradients_not_non_finite():
    from rich.console import Console

    from resflow.report.terminal.sweep import sweep_table

    summary = pd.DataFrame(
        {
            "variant": ["s0", "s1"],
            "init_scale": [0.0, 1.0],
            "seed": 0,
            "step": 0,
            "grad_ratio": [float("nan"), 0.5],
            "gain_per_layer": [float("nan"), 0.99],
            "finite": [True, True],
        }
    )
    console = Console(width=200, record=True)
    console.print(sweep_table(summary, ["init_scale"]))
    rows = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert "no gradient" in rows[0] and "0/0" in rows[0] and "non-finite" not in rows[0] and "nan" not in rows[0]
    assert "no gradient" not in rows[1]
    # one seed of three with no gradient: the others' median, no flag for it
    summary = pd.DataFrame(
        {
            "variant": "s",
            "init_scale": 1.0,
            "seed": [0, 1, 2],
            "step": 0,
            "grad_ratio": [float("nan"), 0.5, 0.7],
            "gain_per_layer": 0.99,
            "finite": True,
        }
    )
    console = Console(width=200, record=True)
    console.print(sweep_table(summary, ["init_scale"]))
    (row,) = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert "0.6" in row and "0.5 – 0.7" in row and "no gradient" not in row and "nan" not in row


def test_depth_story_survives_ratios_spanning_more_than_a_float():
    from resflow.report.terminal.sweep import depth_story

    summary = pd.DataFrame(
        {
            "variant": ["a", "b", "c"],
            "depth": [1, 100, 200],
            "seed": 0,
            "grad_ratio": [1e-300, 1e-10, 1e300],
            "gain_per_layer": 1.0,
            "finite": True,
        }
    )
    (line,) = depth_story(summary, ["depth"])
    assert "explodes exponentially" in line


def test_headline_says_an_exact_zero_in_float32_may_be_underflow():
    from resflow.report.terminal.run import headline

    grads = pd.DataFrame(
        {"variant": "v", "seed": 0, "step": 0, "layer": [0, 1, 2], "sublayer": "mlp", "input_grad_norm": [0.0, 1e-30, 0.5]}
    )
    assert "dtype=float64" in headline(grads, dtype="float32")
    assert "dtype=float64" not in headline(grads, dtype="float64")  # a true zero there: nothing to suggest
    grads["input_grad_norm"] = [1e-3, 0.1, 0.5]
    assert "dtype=float64" not in headline(grads, dtype="float32")


def test_compare_headline_says_a_norm_placement_comparison_at_init_is_not_about_training():
    from resflow.report.terminal.sweep import compare_headline

    summary = pd.DataFrame({"variant": ["pre", "post"], "seed": 0, "step": 0, "grad_ratio": [3.4, 1.05], "norm": ["pre", "post"]})
    text = compare_headline(summary)
    assert text.startswith("post keeps") and "at initialisation" in text and "train-postln" in text
    assert "at initialisation" not in compare_headline(summary.assign(norm="pre"))  # no norm placement compared
    assert "at initialisation" not in compare_headline(summary.assign(step=100))  # trained: the last step
