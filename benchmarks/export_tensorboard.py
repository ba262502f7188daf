"""`resflow export --to tensorboard` on a big results dir, and the code it replaced, in one process.

The exporter groups a run's grads rows once by step (one event per step: every layer's scalars and
the histogram). The code before issue 25 (kept below as `before_export`, verbatim but for names)
filtered the run's DataFrame once per layer tag and per step: time grew with rows × layers. Both
write the same scalars and histograms (checked: the same counts, and the same values read back).

    PYTHONPATH=. python -m benchmarks --only export
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def grads_result(seeds: int, steps: int, layers: int):
    """A training results dir's tables in memory: seeds × steps × layers grads rows (one variant)."""
    from resflow.results.tables import RunResult

    rng = np.random.default_rng(0)
    n = seeds * steps * layers
    seed = np.repeat(np.arange(seeds), steps * layers)
    step = np.tile(np.repeat(np.arange(steps) * 10, layers), seeds)
    layer = np.tile(np.arange(layers), seeds * steps)
    grads = pd.DataFrame(
        {
            "variant": np.repeat("deep", n),
            "seed": seed,
            "step": step,
            "layer": layer,
            "sublayer": np.repeat("mlp", n),
            "input_grad_norm": np.exp(rng.normal(0, 3, n)),
            "param_grad_norm": np.exp(rng.normal(0, 3, n)),
            "activation_rms": np.exp(rng.normal(0, 1, n)),
        }
    )
    summary = pd.DataFrame({"variant": ["deep"] * seeds, "seed": np.arange(seeds), "grad_ratio": np.ones(seeds)})
    params = pd.DataFrame({"variant": [], "seed": []})
    return RunResult(grads=grads, params=params, summary=summary, config={"name": "deep"}, meta={})


# ---------------------------------------------------------------------------------------------
# The exporter before issue 25 (resflow/report/export/{runs,tensorboard}.py at 1c9e380)


def _before_layer_series(g: pd.DataFrame, column: str):
    from resflow.results.tensorboard_events import layer_tag

    if column not in g or g[column].isna().all():
        return
    keys = g.apply(layer_tag, axis=1)
    for tag in dict.fromkeys(keys):
        rows = g[keys == tag]
        yield tag, [(int(s), float(v)) for s, v in zip(rows["step"], rows[column]) if not pd.isna(v)]


def before_export(result, logdir: Path):
    """(scalars, histograms) written, the old way: one DataFrame filter per layer tag and per step."""
    from resflow.results.tensorboard_events import MEASURES, hparams_end, hparams_start
    from resflow.results.tensorboard_events import event as _event
    from resflow.results.tensorboard_events import histogram as _histogram
    from resflow.results.tensorboard_events import scalar as _scalar
    from resflow.results.tensorboard_events import text as _text
    from resflow.results.tensorboard_events import writer as _writer

    scalars = histograms = 0
    wall = time.time()
    for (variant, seed), g in result.grads.groupby(["variant", "seed"], sort=False):
        summary = result.summary[(result.summary["variant"] == variant) & (result.summary["seed"] == seed)]
        writer = _writer(Path(logdir) / f"{variant}/seed_{int(seed)}")
        try:
            start, end = hparams_start({}, wall), hparams_end(wall)
            _event(writer, 0, [*start, _text("config", "```\n" + json.dumps(result.config) + "\n```")], wall)
            for column in MEASURES:
                for tag, points in _before_layer_series(g, column):
                    for step, value in points:
                        _event(writer, step, [_scalar(f"{column}/{tag}", value)], wall)
                        scalars += 1
            last = g[g["step"] == g["step"].max()]
            for site, value in enumerate(float(v) for v in last["input_grad_norm"]):
                _event(writer, site, [_scalar("profile/input_grad_norm", value)], wall)
                scalars += 1
            all_steps = sorted(int(s) for s in g["step"].unique())
            for step in all_steps:
                norms = g.loc[g["step"] == step, "input_grad_norm"].to_numpy(dtype=float)
                logs = np.log10(norms[np.isfinite(norms) & (norms > 0)])
                if len(logs):
                    _event(writer, step, [_histogram("log10_input_grad_norm", logs)], wall)
                    histograms += 1
            value = float(summary["grad_ratio"].iloc[-1])
            _event(writer, all_steps[-1], [_scalar("summary/grad_ratio", value)], wall)
            scalars += 1
            _event(writer, all_steps[-1], [end], wall)
        finally:
            writer.close()
    return scalars, histograms


def _read_back(logdir: Path, tag: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir / "deep" / "seed_0"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def bench_export(quick: bool, device=None):  # event files: no device
    from benchmarks.run import Row
    from resflow.report.export import export

    shape = (2, 20, 50) if quick else (10, 1000, 100)  # seeds, steps, layers: 2,000 / 1,000,000 rows
    big = grads_result(*shape)
    small = grads_result(2, 10, 20) if quick else grads_result(3, 100, 100)  # 400 / 30,000 rows: the old code's size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = export(big, "tensorboard", Path(tmp) / "big")
        big_s = time.perf_counter() - t0
        n = len(big.grads)
        seeds, steps, layers = shape  # every value, each run's profile (a value per layer) and grad_ratio
        ok = (done.scalars, done.histograms) == (3 * n + seeds * (layers + 1), seeds * steps)
        rows.append(
            Row(
                f"export --to tensorboard, {n:,} grads rows ({len(done.runs)} runs)",
                big_s,
                "s",
                "< 60",
                big_s < 60 and ok,
                f"{big_s / n * 1e6:.1f} µs per row; {done.scalars:,} scalars, {done.histograms:,} histograms",
            )
        )
        t0 = time.perf_counter()
        new = export(small, "tensorboard", Path(tmp) / "new")
        new_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = before_export(small, Path(tmp) / "old")
        old_s = time.perf_counter() - t0
        same = old == (new.scalars, new.histograms) and all(
            _read_back(Path(tmp) / "old", tag) == _read_back(Path(tmp) / "new", tag)
            for tag in ("input_grad_norm/layer_000", "param_grad_norm/layer_007")
        )  # (the per-layer scalars; the profile is log10 since issue 27, the old one linear)
        m = len(small.grads)
        rows.append(
            Row(
                f"export --to tensorboard, {m:,} grads rows: before / now (same process)",
                old_s / new_s,
                "x",
                ">= 10",
                old_s / new_s >= 10 and same and math.isfinite(old_s),
                f"before {old_s:.2f} s ({old_s / m * 1e3:.2f} ms per row), now {new_s:.2f} s; the same events: {same}",
            )
        )
    return rows
