"""What every tracker exports, in tracker-neutral terms: one run per (variant, seed), the per-layer
series over steps, the depth profile, the loss curves, the config and its headline metrics."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from resflow.results.tensorboard_events import MEASURES as MEASURES  # re-exported: what every tracker exports
from resflow.results.tensorboard_events import layer_tag
from resflow.results.values import as_bool, as_number, show, unset

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
    """A variant as a path component: '/' and control characters replaced."""
    return re.sub(r"[/\\\x00-\x1f]", "_", str(text)) or "_"


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def hparam_kinds(summary: pd.DataFrame) -> dict[str, str]:
    """Each hparam column's one type over every run ("number", "bool" or "text"): a tracker compares
    runs by an hparam only when every run gives it the same type, so a column holding a word anywhere
    (residual_scale 1 and deepnorm) is text in every run ("1", "deepnorm")."""
    kinds = {}
    for c in summary.columns:
        values = [v for v in summary[c] if not unset(v)]
        if all(isinstance(v, (bool, np.bool_)) for v in values):
            kinds[c] = "bool"
        elif all(as_number(v) is not None for v in values):
            kinds[c] = "number"
        elif all(as_bool(v) is not None for v in values):
            kinds[c] = "bool"
        else:
            kinds[c] = "text"
    return kinds


def _hparam(value, kind: str):
    if unset(value):
        return None
    if kind == "number":  # (an int stays an int; a number's text, '1.0', becomes the number)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else as_number(value)
    if kind == "bool":
        return as_bool(value)
    return show(value)


def runs(result) -> Iterator[Run]:
    """One Run per (variant, seed), in the tables' order."""
    g = result.grads
    config = result.config or {}
    kinds = hparam_kinds(result.summary)
    for (variant, seed), rows in g.groupby(["variant", "seed"], sort=False):

        def part(df):
            if df is None or not len(df) or "variant" not in df:
                return df.iloc[0:0] if df is not None else None
            return df[(df["variant"] == variant) & (df["seed"] == seed)]

        summary = part(result.summary)
        hparams = {}
        if len(summary):
            last = summary.iloc[-1]
            hparams = {
                c: _hparam(_plain(last[c]), kinds[c])
                for c in summary.columns
                if c not in HPARAM_SKIP and not c.startswith("predicted_") and c not in ("chi1", "depth_scale")
            }
        per_config = config.get("compare", {}).get(variant) if isinstance(config.get("compare"), dict) else None
        yield Run(
            f"{safe_name(variant)}/seed_{int(seed)}",
            str(variant),
            int(seed),
            rows,
            part(result.params),
            summary,
            part(result.train),
            {k: v for k, v in hparams.items() if v is not None},
            per_config or config,
        )


def layer_series(run: Run, column: str) -> Iterator[tuple[str, list[tuple[int, float]]]]:
    """(tag, [(step, value), ...]) per layer (and sub-layer) for one grads.csv column."""
    g = run.grads
    if column not in g or g[column].isna().all():
        return
    keys = g.apply(layer_tag, axis=1)
    for tag in dict.fromkeys(keys):
        rows = g[keys == tag]
        yield tag, [(int(s), float(v)) for s, v in zip(rows["step"], rows[column]) if not pd.isna(v)]


def profile(run: Run, column: str = "input_grad_norm") -> list[float]:
    """The depth profile at the last step: one value per site (layer, sub-layer), first layer first."""
    g = run.grads
    last = g[g["step"] == g["step"].max()]
    return [float(v) for v in last[column]]


def steps(run: Run) -> list[int]:
    return sorted(int(s) for s in run.grads["step"].unique())
