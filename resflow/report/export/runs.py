"""What every tracker exports, in tracker-neutral terms: one run per (variant, seed) with its rows,
its config columns (the hyperparameters) and its config, and `replay`, which feeds a run's tables to
a tracker's sink (resflow.results.sinks) step by step, as a live run would have."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from resflow.results.sinks import summary_of
from resflow.results.tensorboard_events import MEASURES as MEASURES  # re-exported: what every tracker exports
from resflow.results.tensorboard_events import METRICS as METRICS
from resflow.results.tensorboard_events import STEP_SCALARS as LOSSES
from resflow.results.values import as_bool, as_number, show, unset

NOT_CONFIG = {"variant", "seed", "step", "layer", "sublayer", *MEASURES}  # grads.csv's columns that are not config


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
    hist: pd.DataFrame | None = None  # hist.csv's rows (gradient histograms), when the run has them


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
    config_columns = [c for c in g.columns if c not in NOT_CONFIG]
    kinds = hparam_kinds(g[config_columns].drop_duplicates())
    tables = {name: _by_run(getattr(result, name, None)) for name in ("params", "summary", "train", "hist")}
    taken: set[str] = set()
    for (variant, seed), rows in g.groupby(["variant", "seed"], sort=False):

        def part(name):
            df = getattr(result, name, None)
            if df is None:
                return None
            return tables[name].get((variant, seed), df.iloc[0:0])

        summary = part("summary")
        first = rows.iloc[0]
        hparams = {c: _hparam(_plain(first[c]), kinds[c]) for c in config_columns}  # the config columns, swept ones too
        hparams["seed"] = int(seed)
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
            part("hist"),
        )


def started(result) -> float:
    """The run's start as a Unix time (meta.json's `started`), else now."""
    from datetime import datetime

    text = (result.meta or {}).get("started")
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        import time

        return time.time()


def replay(run: Run, sink, start: float) -> None:
    """Feed one run's tables to a sink (resflow.results.sinks) step by step, as a live run would
    have: each recorded step's sites, each train.csv row's scalars (at its real wall time, `start` +
    wall_time_s; `start` where the run has no train.csv), then the summary."""
    g = run.grads
    keep = [c for c in ("layer", "sublayer", *MEASURES) if c in g]
    sites = {int(s): rows[keep].to_dict("records") for s, rows in g.groupby("step", sort=True)}
    scalars: dict[int, dict] = {}
    walls: dict[int, float] = {}
    if run.train is not None and len(run.train):
        t = run.train
        columns = [c for c in LOSSES if c in t]
        for record in t[["step", *columns, *(["wall_time_s"] if "wall_time_s" in t else [])]].to_dict("records"):
            step = int(record["step"])
            scalars[step] = {c: _plain(record[c]) for c in columns}
            if "wall_time_s" in record and not pd.isna(record["wall_time_s"]):
                walls[step] = start + float(record["wall_time_s"])
    hists = {}
    if run.hist is not None and len(run.hist) and hasattr(sink, "log_hist"):  # gradient histograms (opted into)
        hists = {int(s): rows.to_dict("records") for s, rows in run.hist.groupby("step", sort=True)}
    for step in sorted(set(sites) | set(scalars)):
        sink.log(step, sites.get(step, ()), scalars.get(step), walls.get(step, start))
        if step in hists:
            sink.log_hist(step, hists[step], walls.get(step, start))
    sink.close(summary_of(run.summary))
