"""Config keys that hold words (residual_scale: deepnorm, norm: post, dtype: float64, ...) are drawn,
labelled and sorted in every figure and table, for every bundled config, with figures on.

The keys come from the schema itself (every Literal or str field), so a key added later is covered
without editing this file. Each bundled config, at a tiny size, is swept over each such key's values
(every value the config accepts; `residual_scale` also with numbers beside `deepnorm`); the figures
are drawn from the sweep's result as it comes back and again from its CSVs (`resflow plot`), and the
one-key ratio figure's x axis must be the values in order, each point the summary's ratio.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from resflow.config.loading import bundled_config_names, load_config
from resflow.config.schema import Config
from resflow.errors import ConfigError
from resflow.report.figures.plots import figure_builders
from resflow.results.files import read_run
from resflow.sweep.plan import make_plan, short_key
from resflow.sweep.runner import run_sweep

FREE_TEXT = {"name", "model.factory"}  # not swept over words: the run's name; a factory (a model of its own)
EXTRA_VALUES = {"model.residual_scale": [1.0, 0.5]}  # a number and a word side by side


def word_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, list]:
    """Every config key whose type admits a word (Literal or str), with its words (and None if optional)."""
    out = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = [ann] if get_origin(ann) in (None, Literal) else list(get_args(ann))
        for arg in args:
            arg = get_args(arg)[0] if get_origin(arg) is Annotated else arg  # (a block family's section)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                for key, words in word_keys(arg, f"{prefix}{name}.").items():
                    out[key] = list(dict.fromkeys(out.get(key, []) + words))
        words = [w for arg in args if get_origin(arg) is Literal for w in get_args(arg)]
        if (words or str in args) and f"{prefix}{name}" not in FREE_TEXT:
            out[f"{prefix}{name}"] = words + ([None] if type(None) in args else [])
    return out


WORD_KEYS = word_keys()


def test_the_schema_has_the_word_keys_the_issue_names():
    """(So the enumeration cannot silently find nothing.)"""
    assert {"model.residual_scale", "model.norm", "model.block", "model.init.scheme", "dtype", "loss"} <= set(WORD_KEYS)
    assert "deepnorm" in WORD_KEYS["model.residual_scale"]


def tiny(name: str) -> Config:
    """A bundled config at a size that runs in milliseconds (training: 1 step, 1 seed)."""
    cfg = load_config(name)
    m = cfg.model
    items = ["seeds=2", "data.batch_size=2"]
    if m.factory == "hf:gpt2":
        items = ["seeds=1", "model.kwargs={n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8}"]
        items.append("data.tokens={vocab: 16, seq_len: 4}")
    elif m.factory is not None:
        items = ["seeds=1", "data.shape=[2, 3, 16, 16]"]
        items.append("model.kwargs={depths: [1, 1], layer_type: basic, hidden_sizes: [8, 16], embedding_size: 8}")
    else:
        items += [f"model.depth={8 if m.block == 'conv' else 2}", "model.width=8"]
        if m.block == "transformer":
            items += ["data.seq_len=4", "model.heads=2"]
    if cfg.train.steps:  # (one seed: training evaluates every recorded step, the digits' whole test split)
        items += [
            "seeds=1",
            "train.steps=1",
            "train.record_every=1",
            "train.eval_batches=1",
            f"train.warmup={min(cfg.train.warmup, 1)}",
        ]
        items += ["train.batch_size=2"] if cfg.train.batch_size else []
    return load_config(name, items)


def _get(data: dict, key: str):
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def valid_values(base: Config, key: str) -> list:
    """The values of `key` that `base` accepts (as the sweep validates them), each once."""
    import torch

    out, seen = [], set()
    for value in WORD_KEYS[key] + EXTRA_VALUES.get(key, []):
        if value == "cuda" and not torch.cuda.is_available():
            continue
        try:
            cfg = base.replace({key: value})
        except ConfigError:
            continue
        node = _get(cfg.to_dict(), key)
        if repr(node) not in seen and node is not None:
            seen.add(repr(node))
            out.append(node)
    return out


def expected_order(values: list) -> list[str]:
    """Numbers first, ascending (1 for 1.0), then words, alphabetically: written out independently."""
    numbers = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    words = sorted(str(v) for v in values if isinstance(v, str))
    return [f"{n:g}" for n in numbers] + words


def check_figures(result, column: str, values: list, every: bool = True) -> None:
    """The figures of a sweep over `column`; `every`: all of them, else those that show the swept
    values (the profile's legend, the ratio line; each titled by `describe`), which is what differs
    from one key to the next."""
    builders = figure_builders(result)
    assert "profile" in builders and "params" in builders
    figs = {name: build() for name, build in builders.items() if every or name in ("profile", "ratio")}
    profile_labels = figs["profile"].axes[0].get_legend_handles_labels()[1]
    if len(values) > 1:
        shown = expected_order(values)
        for text in shown:  # each point's legend entry names its value as written
            assert any(f"{column}={text}" in label for label in profile_labels), (text, profile_labels)
        ax = figs["ratio"].axes[0]
        words = any(isinstance(v, str) for v in values)
        if words:  # evenly spaced, each labelled
            assert [t.get_text() for t in ax.get_xticklabels()] == shown
        line = ax.get_lines()[0]
        x, y = line.get_xdata(), line.get_ydata()
        summary = result.summary
        for i, text in enumerate(shown):  # the point above each label is that value's measured ratio
            rows = summary[[_text(v) == text for v in summary[column]]]
            want = float(rows["grad_ratio"].median())
            assert x[i] == (i if words else float(text))
            assert math.isclose(y[i], want, rel_tol=1e-12) or not (want > 0 and math.isfinite(want)), (text, y[i], want)
    else:
        assert figs["profile"].axes[0].get_lines()  # one point: the run's figures


def _text(value) -> str:
    """A summary cell as the labels write it (a CSV read back gives '1.0' beside 'deepnorm')."""
    try:
        return f"{float(value):g}"
    except ValueError:
        return str(value)


@pytest.mark.parametrize("name", bundled_config_names())
def test_every_word_value_of_every_bundled_config_is_drawn(name, tmp_path):
    base = tiny(name)
    if str(base.model.factory or "").startswith("hf:"):  # (the README's venv has only the test extra)
        pytest.importorskip("transformers")
    swept = 0
    own = base.to_dict()
    every = True  # all the figures once per config (its kind: trained, conv, any model); then those showing the values
    for key in WORD_KEYS:
        values = valid_values(base, key)
        if not values or values == [_get(own, key)]:  # (the config's own value is in every other sweep's rows)
            continue
        try:
            plan = make_plan(base, [(key, values)])
        except ConfigError as err:  # a sweep that would sweep nothing is refused, in one line
            assert key == "loss" and base.train.steps and "not used when training" in str(err), err
            continue
        out = tmp_path / key
        done = run_sweep(plan, out, workers=1)
        column = short_key(key)
        check_figures(done.result, column, values, every)
        if len({type(v) for v in values}) > 1:  # a number beside a word: read back from the CSVs as text
            check_figures(read_run(out), column, values, every)  # (`resflow plot`)
        every = False
        swept += 1
    assert swept >= 3


# ---------------------------------------------------------------------------------------------
# DeepNorm beside numbers, end to end through the CLI: run, sweep, show, plot, compare, report, export

TINY_POST_NORM = ["--set", "model.depth=2", "--set", "model.width=8", "--set", "model.heads=2"]
TINY_POST_NORM += ["--set", "data.batch_size=2", "--set", "data.seq_len=4", "--seeds", "2"]


def test_deepnorm_through_every_command(tmp_path):
    from clirunner import Runner

    from resflow.cli.app import app

    runner = Runner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    run_dir, sweep_dir, compare_dir = tmp_path / "run", tmp_path / "sweep", tmp_path / "compare"
    invoke("run", "post-norm", "--set", "model.residual_scale=deepnorm", *TINY_POST_NORM, "--out", run_dir)
    assert {"profile.png", "params.png"} <= {p.name for p in run_dir.glob("*.png")}
    invoke("sweep", "post-norm", "--over", "model.residual_scale=deepnorm,1,0.5", *TINY_POST_NORM, "-j", 1, "--out", sweep_dir)
    assert (sweep_dir / "ratio.png").is_file()
    shown = invoke("show", sweep_dir).stdout
    rows = [line for line in shown.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["deepnorm", "1", "0.5"]  # the sweep's own order, as written
    invoke("plot", sweep_dir)
    ax = check_ratio_axis(sweep_dir)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "deepnorm"]
    invoke("compare", "post-norm", "post-norm[model.residual_scale=deepnorm]", *TINY_POST_NORM, "-j", 1, "--out", compare_dir)
    assert (compare_dir / "profile.png").is_file()
    for directory in (run_dir, sweep_dir, compare_dir):
        invoke("report", directory)
        page = (directory / "report.html").read_text()
        assert "could not be drawn" not in page and "deepnorm" in page
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    invoke("export", sweep_dir, tmp_path / "tb", "--to", "tensorboard")
    seen = {}
    for run in sorted((tmp_path / "tb").glob("*/seed_*")):
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0})
        acc.Reload()
        content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        value = hparams["residual_scale"]
        assert value.WhichOneof("kind") == "string_value"  # one type in every run: TensorBoard compares them
        seen[value.string_value] = seen.get(value.string_value, 0) + 1
    assert seen == {"deepnorm": 2, "1": 2, "0.5": 2}


def check_ratio_axis(directory):
    """The ratio figure of a results dir, drawn again from its CSVs: its axes."""
    return figure_builders(read_run(directory))["ratio"]().axes[0]


def test_two_word_keys_make_a_labelled_heatmap_and_depth_lines(tmp_path):
    """Two keys, one mixing a word with numbers: the heatmap's rows and columns in values order, each
    cell the summary's median log10 ratio; with depth, one line per word, labelled."""
    import numpy as np

    from resflow.report.figures.plots import depth_figure, heatmap_figure

    base = tiny("post-norm")
    axes = [("model.residual_scale", ["deepnorm", 1.0]), ("model.norm_type", ["rmsnorm", "layernorm"])]
    done = run_sweep(make_plan(base, axes), tmp_path / "grid", workers=1)
    for result in (done.result, read_run(tmp_path / "grid")):
        s = result.summary
        ax = heatmap_figure(s, "residual_scale", "norm_type").axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "deepnorm"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["layernorm", "rmsnorm"]
        grid = ax.get_images()[0].get_array()
        for i, norm_type in enumerate(["layernorm", "rmsnorm"]):
            for j, scale in enumerate(["1", "deepnorm"]):
                rows = s[(s["norm_type"] == norm_type).to_numpy() & np.array([_text(v) == scale for v in s["residual_scale"]])]
                assert grid[i, j] == np.median(rows["log10_grad_ratio"])
    depth = run_sweep(
        make_plan(base, [("model.residual_scale", [1.0, "deepnorm"]), ("model.depth", [1, 2])]), tmp_path / "d", workers=1
    )
    ax = depth_figure(depth.result.summary, ["depth", "residual_scale"]).axes[0]
    labels = [line.get_label() for line in ax.get_lines() if line.get_gid() and line.get_gid().startswith("median:")]
    assert labels == ["residual_scale=1", "residual_scale=deepnorm"]
