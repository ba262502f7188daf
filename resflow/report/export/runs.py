"""What every tracker exports, in tracker-neutral terms: one run per (variant, seed), the per-layer
series over steps, the depth profile, the loss curves, the config and its headline metrics."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from resflow.results.tensorboard_events import MEASURES as MEASURES  # re-exported: what every tracker exports
from resflow.results.tensorboard_events import layer_tag

LOSSES = ("loss", "eval_loss", "grad_norm_total", "lr")  # train.csv columns exported per step
METRICS = ("grad_ratio", "log10_grad_ratio", "gain_per_layer")  # summary.csv columns: hparams metrics
HPARAM_SKIP = {"variant", "seed", "step", "finite", *METRICS, "grad_first", "grad_last"}


@dataclass
class Exported:
    """What an exporter wrote (for the CLI's last line and the tests)."""

    dest: Any
    runs: list[str] = field(default_factory=list)
    scalars: int = 0
    histograms: int = 0


@dataclass
class Run:
    name: str  # "<variant>/seed_<seed>": a path under the destination
    variant: str
    seed: int
    grads: pd.DataFrame  # this run's rows
    params: pd.DataFrame
    summary: pd.DataFrame
    train: pd.DataFrame | None
    hparams: dict[str, Any]  # the run's config columns (and swept columns), plain values
    config: dict


def safe_name(text: str) -> str:
    """A variant as one path component under the destination: '/', '\\' and control characters
    replaced, never '.', '..' nor a hidden name (a leading '.'), at most 200 bytes (a long one is cut
    and given a hash of the whole): `record(name="..")` or a crafted CSV cannot write outside it."""
    name = re.sub(r"[/\\\x00-\x1f\x7f]", "_", str(text)) or "_"
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name.encode()) > 200:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = name.encode()[:180].decode(errors="ignore") + "-" + digest
    return name


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _by_run(df: pd.DataFrame | None) -> dict:
    """{(variant, seed): that run's rows} of a table, grouped once (not filtered per run)."""
    if df is None or not len(df) or "variant" not in df:
        return {}
    return {key: rows for key, rows in df.groupby(["variant", "seed"], sort=False)}


def runs(result) -> Iterator[Run]:
    """One Run per (variant, seed), in the tables' order; names are distinct path components
    (two variants that sanitise alike get -2, -3, ...)."""
    g = result.grads
    config = result.config or {}
    tables = {name: _by_run(getattr(result, name)) for name in ("params", "summary", "train")}
    taken: set[str] = set()
    for (variant, seed), rows in g.groupby(["variant", "seed"], sort=False):

        def part(name):
            df = getattr(result, name)
            if df is None:
                return None
            return tables[name].get((variant, seed), df.iloc[0:0])

        summary = part("summary")
        hparams = {}
        if len(summary):
            last = summary.iloc[-1]
            hparams = {
                c: _plain(last[c])
                for c in summary.columns
                if c not in HPARAM_SKIP and not c.startswith("predicted_") and c not in ("chi1", "depth_scale")
            }
        per_config = config.get("compare", {}).get(variant) if isinstance(config.get("compare"), dict) else None
        base, k = safe_name(variant), 2
        folder = base
        while f"{folder}/seed_{int(seed)}" in taken:
            folder, k = f"{base}-{k}", k + 1
        name = f"{folder}/seed_{int(seed)}"
        taken.add(name)
        yield Run(
            name,
            str(variant),
            int(seed),
            rows,
            part("params"),
            summary,
            part("train"),
            {k: v for k, v in hparams.items() if v is not None},
            per_config or config,
        )


def layer_tags(g: pd.DataFrame) -> np.ndarray:
    """layer_tag of every row of a grads table, computed once per distinct (layer, sublayer)."""
    layer = g["layer"].to_numpy()
    sub = g["sublayer"].to_numpy(dtype=object) if "sublayer" in g else np.full(len(g), None, dtype=object)
    keys = pd.MultiIndex.from_arrays([layer, pd.Series(sub).fillna("").to_numpy()])
    codes, uniques = pd.factorize(keys)
    names = np.array([layer_tag({"layer": lay, "sublayer": s}) for lay, s in uniques], dtype=object)
    return names[codes]


def layer_series(run: Run, column: str) -> Iterator[tuple[str, list[tuple[int, float]]]]:
    """(tag, [(step, value), ...]) per layer (and sub-layer) for one grads.csv column, grouped once."""
    g = run.grads
    if column not in g or g[column].isna().all():
        return
    tags = layer_tags(g)
    series: dict[str, list] = {}
    for tag, step, value in zip(tags, g["step"].to_numpy(), g[column].to_numpy(dtype=float)):
        if value == value:  # not NaN
            series.setdefault(tag, []).append((int(step), float(value)))
    for tag in dict.fromkeys(tags):
        yield tag, series.get(tag, [])


def profile(run: Run, column: str = "input_grad_norm") -> list[float]:
    """The depth profile at the last step: one value per site (layer, sub-layer), first layer first."""
    g = run.grads
    last = g[g["step"] == g["step"].max()]
    return [float(v) for v in last[column]]


def steps(run: Run) -> list[int]:
    return sorted(int(s) for s in run.grads["step"].unique())
