"""The one results schema: the columns of each table, the frames built from tidy rows, `RunResult`.

Every table is long/tidy (one row per seed, step, layer...), so CSVs of different runs concatenate
directly; tables and figures read these DataFrames, never the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from resflow import quantities
from resflow.results.stats import ratio_from, without_input_gradient

# Columns copied from the config into every row, so CSVs of different runs concatenate directly.
CONFIG_COLUMNS = [
    "block",
    "depth",
    "width",
    "activation",
    "residual",
    "residual_scale",
    "norm",
    "norm_type",
    "init_scheme",
    "init_scale",
]
# The quantities' columns come from the registry (resflow.quantities): the original three before the
# config columns, the newer ones appended (so an older run's columns keep their places).
GRADS_KEYS = ["variant", "seed", "step", "layer", "sublayer"]
GRADS_COLUMNS = [*GRADS_KEYS, *quantities.leading(), *CONFIG_COLUMNS]
GRADS_APPENDED = quantities.appended()  # after every other column (theory's too); opt-in ones only when measured
PARAMS_KEYS = ["variant", "seed", "step", "layer", "param"]
PARAMS_COLUMNS = [*PARAMS_KEYS, *(n for n, q in quantities.PARAMS.items() if not q.opt_in)]
# added to params.csv when measured (training runs: train.steps > 0; watch's opt-ins)
TRAIN_PARAMS_COLUMNS = [n for n, q in quantities.PARAMS.items() if q.opt_in]
TRAIN_COLUMNS = [  # train.csv: training runs only, one row per (variant, seed, step)
    "variant",
    "seed",
    "step",
    "loss",
    "eval_loss",
    "grad_norm_total",
    "lr",
    "wall_time_s",
    "task_floor",
    "task_baseline",
    *CONFIG_COLUMNS,
]
SUMMARY_COLUMNS = [
    "variant",
    "seed",
    "step",
    "grad_first",
    "grad_last",
    "grad_ratio",
    "log10_grad_ratio",
    "gain_per_layer",
    "finite",
    "log10_ratio_sd",
    "ratio_q25",
    "ratio_q75",
    *CONFIG_COLUMNS,
]


def config_columns(cfg) -> dict[str, Any]:
    m = cfg.model
    return dict(
        block=m.block,
        depth=m.depth,
        width=m.width,
        **m.columns(),  # activation, residual, residual_scale, norm, norm_type: the block family's words
        init_scheme=m.init.scheme,
        init_scale=m.init.scale,
    )


def _order(present, columns: list[str], last=()) -> list[str]:
    """The schema's columns first, in order; any extra columns (added by later features) after;
    `last` at the end: of the column names `present`."""
    extra = [c for c in present if c not in columns and c not in last]
    return [c for c in columns if c in present] + extra + [c for c in last if c in present]


def _ordered(df: pd.DataFrame, columns: list[str], last=()) -> pd.DataFrame:
    """`df` with its columns in `_order` (itself when they already are)."""
    order = _order(list(df.columns), columns, last)
    return df if order == list(df.columns) else df[order]


def _frame(rows: dict[str, list], columns: list[str], last=()) -> pd.DataFrame:
    """A frame of `rows` with its columns in `_order`, made in that order (no reordering copy)."""
    return pd.DataFrame({c: rows[c] for c in _order(list(rows), columns, last)})


def appended_last(grads: pd.DataFrame) -> pd.DataFrame:
    """`grads` with the registry's appended quantity columns moved to the end (after a column added
    later, such as the theory's), so every older column keeps its place in grads.csv."""
    cols = [c for c in grads.columns if c not in GRADS_APPENDED] + [c for c in GRADS_APPENDED if c in grads.columns]
    return grads if cols == list(grads.columns) else grads[cols]


MODULE_COLUMN = "module"  # any model's grads.csv (resflow.record/watch): the block's qualified name, after sublayer


def grads_frame(rows: dict[str, list]) -> pd.DataFrame:
    columns = GRADS_COLUMNS
    if MODULE_COLUMN in rows:
        at = GRADS_COLUMNS.index("sublayer") + 1
        columns = [*GRADS_COLUMNS[:at], MODULE_COLUMN, *GRADS_COLUMNS[at:]]
    return _frame(rows, columns, GRADS_APPENDED)


def params_frame(rows: dict[str, list]) -> pd.DataFrame:
    return _frame(rows, PARAMS_COLUMNS)


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    return _ordered(df, SUMMARY_COLUMNS)


def train_frame(rows: dict[str, list]) -> pd.DataFrame:
    return _frame(rows, TRAIN_COLUMNS)


@dataclass(repr=False)
class RunResult:
    """What `resflow.run` returns and what a results dir holds."""

    grads: pd.DataFrame
    params: pd.DataFrame
    summary: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)  # the fully resolved config
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was written / read from
    train: pd.DataFrame | None = None  # train.csv: training runs only
    hist: pd.DataFrame | None = None  # hist.csv: gradient histograms, when opted into (resflow.quantities)

    def _overview(self) -> tuple[str, list[tuple[str, str]]]:
        """A title and (what, value) lines: the kind, variants, seeds, layers, the tables' sizes."""
        g = self.grads
        kind = (
            (self.meta or {}).get("kind") or _any_model_kind(self.config) or ("training run" if self.train is not None else "run")
        )
        variants = list(g["variant"].unique()) if "variant" in g else []
        shown = ", ".join(map(str, variants[:4])) + (f", … ({len(variants)} in all)" if len(variants) > 4 else "")
        lines = [("variants", shown or "-")]
        if "seed" in g and len(g):
            lines.append(("seeds", str(g["seed"].nunique())))
        if "layer" in g and len(g):
            lines.append(("layers", f"{g['layer'].min()}-{g['layer'].max()}"))
        if "step" in g and g["step"].nunique() > 1:
            lines.append(("steps", f"{g['step'].min()}-{g['step'].max()}"))
        skipped = without_input_gradient(g)
        if skipped:  # any model's first block, fed by the data: say so; the ratio from the first with a gradient
            k = max(skipped) + 1
            which = f"layer {skipped[0]}" if len(skipped) == 1 else f"layers {', '.join(map(str, skipped))}"
            ratio = f"layer {k}/last {ratio_from(g, k):.3g}x (median over seeds)"
            lines.append(("first/last layer gradient", f"{which}: no input gradient (fed by the data directly); {ratio}"))
        elif "grad_ratio" in self.summary and len(self.summary):
            s = self.summary
            per_variant = s.groupby("variant", sort=False)["grad_ratio"].median() if "variant" in s else s["grad_ratio"]
            if len(per_variant) == 1:
                lines.append(("first/last layer gradient", f"{per_variant.iloc[0]:.3g}x (median over seeds)"))
            else:
                lines.append(
                    (
                        "first/last layer gradient",
                        f"{per_variant.min():.3g}x to {per_variant.max():.3g}x (median over seeds, per variant)",
                    )
                )
        tables = [f"grads {len(g):,}", f"params {len(self.params):,}", f"summary {len(self.summary):,}"]
        if self.train is not None:
            tables.append(f"train {len(self.train):,}")
        lines.append(("tables (rows)", ", ".join(tables)))
        if self.path is not None:
            lines.append(("path", str(self.path)))
        return f"resflow {kind}", lines

    def __repr__(self) -> str:
        return self.overview_text()

    def _repr_html_(self) -> str:
        return self.overview_html()

    def overview_text(self, head: str | None = None, first: list[tuple[str, str]] = ()) -> str:
        """The repr: `<head>` (default 'RunResult: <kind>') and aligned lines, `first` leading."""
        title, lines = self._overview()
        lines = [*first, *lines]
        width = max(len(what) for what, _ in lines)
        return "\n".join([f"<{head or 'RunResult: ' + title}>", *(f"  {what:<{width}}  {value}" for what, value in lines)])

    def overview_html(self, head: str | None = None, first: list[tuple[str, str]] = ()) -> str:
        """The notebook view: the same lines as a small HTML table."""
        from html import escape

        title, lines = self._overview()
        rows = "".join(
            f"<tr><th style='text-align:left'>{escape(w)}</th><td style='text-align:left'>{escape(v)}</td></tr>"
            for w, v in [*first, *lines]
        )
        return f"<div><strong>{escape(head or 'RunResult: ' + title)}</strong><table>{rows}</table></div>"


def _any_model_kind(config: dict | None) -> str | None:
    """'watch' or 'record' for a result of resflow.watch / resflow.record (from its config), else None."""
    config = config or {}
    if "watch" in config:
        return "watch (your training loop)"
    if isinstance(config.get("model"), dict) and "class" in config["model"]:
        return "record (one step of your model)"
    return None


def depth_axis(summary: pd.DataFrame, columns: list[str]) -> list[str]:
    """Swept columns, with a factory model's depth knob named `depth`: a swept column (e.g.
    `kwargs_n_layer` from `--over model.kwargs.n_layer=...`) whose values map one-to-one onto the
    `depth` column (the blocks found) is a depth sweep, told and drawn as the built-in one is."""
    if "depth" in columns or "depth" not in summary or summary["depth"].nunique() < 2:
        return list(columns)
    for col in columns:
        if col not in summary:
            continue
        pairs = summary[[col, "depth"]].drop_duplicates()
        if len(pairs) == pairs[col].nunique() == pairs["depth"].nunique():
            return ["depth" if c == col else c for c in columns]
    return list(columns)
