"""Terminal output of training runs: a live view while training, a final table after (no torch here).

The live view shows step, loss, eval loss and the first/last site's input gradient; on a terminal it
is a Rich Live line redrawn in place, otherwise (CI, pipes) a plain line at every recorded step.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from rich.live import Live
from rich.table import Table
from rich.text import Text

from resflow import quantities
from resflow.report.terminal.console import printable
from resflow.report.terminal.run import fmt, natural_width, range_flag, shown_rows


def _g(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return "0" if float(value) == 0 else fmt(float(value))  # a floor of exactly 0, not 0.00e+00


class LiveView:
    """`with LiveView(console, name): ... view.update(info)`; `info` is a resflow.train.loop.StepInfo."""

    def __init__(self, console, name: str):
        self.console, self.name = console, name
        self.live = Live(console=console, refresh_per_second=8, transient=True) if console.is_terminal else None
        self.grad = (None, None)
        self.eval = None
        self.accuracy = None  # (train, test) of a classify task

    def __enter__(self) -> "LiveView":
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def line(self, info) -> str:
        return (
            f"{self.name} seed {info.seed} step {info.step:>{len(str(info.steps))}}/{info.steps} "
            f"loss {_g(info.loss)} eval {_g(self.eval)} lr {info.lr:.3g} "
            f"‖∂loss/∂x‖ first {_g(self.grad[0])} last {_g(self.grad[1])}{self._accuracy()}"
        )

    def _accuracy(self) -> str:  # classify: the accuracy of the training and the test set at the last recorded step
        if self.accuracy is None:
            return ""
        train, test = self.accuracy
        return f" accuracy train {train:.1%} test {test:.1%}"

    def update(self, info) -> None:
        recorded = info.grad_first is not None
        if recorded:
            self.grad = (info.grad_first, info.grad_last)
            self.eval = info.eval_loss
            if getattr(info, "eval_accuracy", None) is not None:
                self.accuracy = (info.train_accuracy, info.eval_accuracy)
        if self.live is not None:
            self.live.update(Text(printable(self.line(info))), refresh=False)
        elif recorded:
            self.console.print(self.line(info), markup=False, highlight=False)


def _median(s: pd.Series) -> float:
    v = s.to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


def loss_summary(train: pd.DataFrame) -> pd.DataFrame:
    """Per variant: loss and eval loss at the first and last step, the task's floor and baseline, and
    how far the final eval loss is above the floor (medians over seeds; NaN where a column is absent)."""
    rows = []
    for variant, df in train.groupby("variant", sort=False):
        first, last = df["step"].min(), df["step"].max()
        at = lambda step, col: _median(df.loc[df["step"] == step, col]) if col in df else math.nan  # noqa: E731
        gap = (
            df.loc[df["step"] == last, "eval_loss"] - df.loc[df["step"] == last, "task_floor"]
            if "task_floor" in df
            else pd.Series(dtype=float)
        )
        end = df.loc[df["step"] == last, "eval_loss"].astype(float)
        rows.append(
            dict(
                variant=variant,
                seeds=df["seed"].nunique(),
                steps=int(last),
                loss_start=at(first, "loss"),
                loss_end=at(last, "loss"),
                eval_start=at(first, "eval_loss"),
                eval_end=at(last, "eval_loss"),
                eval_end_min=end.min(),
                eval_end_max=end.max(),
                floor=at(last, "task_floor"),
                baseline=at(last, "task_baseline"),
                above_floor=_median(gap),
                train_set_loss_end=at(last, "train_set_loss"),
                train_accuracy_end=at(last, "train_set_accuracy"),
                eval_accuracy_end=at(last, "eval_accuracy"),
            )
        )
    return pd.DataFrame(rows)


def layer_movement(params: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, seed, layer): how far the layer's parameters moved, ‖Θ_end − Θ_0‖ / ‖Θ_0‖ over all
    of the layer's parameters together."""
    rows = []
    for (variant, seed, layer), df in params.groupby(["variant", "seed", "layer"], sort=False):
        first, last = df["step"].min(), df["step"].max()
        p0 = df[df["step"] == first]
        pend = df[df["step"] == last]
        init_norm = math.sqrt(float((p0["value_norm"].astype(float) ** 2).sum()))
        moved = math.sqrt(float((pend["movement"].astype(float) ** 2).sum()))
        rows.append(dict(variant=variant, seed=seed, layer=layer, movement=moved / init_norm if init_norm > 0 else math.nan))
    return pd.DataFrame(rows)


def step_quantities(grads: pd.DataFrame) -> list:
    """The registry's per-block quantities measured across the optimizer step that `grads` holds
    (resflow.quantities: the update relative to the weights)."""
    return [q for q in quantities.GRADS.values() if q.opt_in and q.name in grads.columns]


def train_table(result, title: str = "") -> Table:
    """Per layer: relative movement since initialisation, the per-block step quantities of the registry
    (median over seeds and recorded steps; a value outside the quantity's rule-of-thumb range flagged),
    and the input gradient at the first and the last recorded step (medians over seeds)."""
    move = layer_movement(result.params).groupby(["variant", "layer"], sort=False)[["movement"]].median().reset_index()
    order = {v: i for i, v in enumerate(move["variant"].unique())}  # variants as they came, layers in order (a stem's -1 first)
    move = move.sort_values(
        ["variant", "layer"], key=lambda c: c.map(order) if c.name == "variant" else c, kind="stable"
    ).reset_index(drop=True)
    g = result.grads
    first, last = g["step"].min(), g["step"].max()
    grad = lambda step: g[g["step"] == step].groupby(["variant", "layer"], sort=False)["input_grad_norm"].median()  # noqa: E731
    move = move.join(grad(first).rename("grad_start"), on=["variant", "layer"]).join(
        grad(last).rename("grad_end"), on=["variant", "layer"]
    )
    step_qs = step_quantities(g)
    for q in step_qs:
        move = move.join(g.groupby(["variant", "layer"], sort=False)[q.name].median(), on=["variant", "layer"])
    table = Table(title=title, title_justify="left", caption_justify="left")
    step_cols = [f"{q.label} {q.unit} (median)".replace("  ", " ") for q in step_qs]
    for col in ("layer", "moved ‖ΔΘ‖/‖Θ₀‖", *step_cols, f"‖∂loss/∂x‖ step {first}", f"step {last}"):
        table.add_column(col, justify="right")
    if step_qs:
        table.add_column("flag")
    rows = shown_rows(len(move))
    for i in rows:
        if i is None:
            table.add_row(*["⋮"] * len(table.columns))
            continue
        r = move.iloc[i]
        flags = [f"{q.name} {f}" for q in step_qs if (f := range_flag(float(r[q.name]), q.good)) in ("low", "high")]
        marks = [Text(_g(r[q.name]), style="bold red" if range_flag(float(r[q.name]), q.good) else "") for q in step_qs]
        cells = [str(int(r["layer"])), _g(r["movement"]), *marks, _g(r["grad_start"]), _g(r["grad_end"])]
        table.add_row(*cells, *([Text(", ".join(flags), style="bold red")] if step_qs else []))
    table.caption = "moved: how far each layer's parameters travelled from initialisation, relative to their initial size"
    for q in step_qs:
        rule = f", flagged outside {q.good[0]:g} … {q.good[1]:g}" if q.good else ""
        table.caption += f"; {q.label} {q.unit}: per block, over its parameters (median over seeds and recorded steps{rule})"
    return table


def loss_table(result, title: str = "loss (median over seeds)", width: int | None = None) -> Table:
    """One row per variant: loss and eval loss at start and end; with several seeds the spread of the
    final eval loss; with the task's floor and baseline (train.csv's task_floor/task_baseline) those
    and eval end − floor. `width`: the terminal's; the training-batch loss columns are dropped first
    (then the spread) when the table would not fit, never a variant's name."""
    stats = loss_summary(result.train)
    watched = (result.config or {}).get("watch")  # resflow.watch: step s is the s-th step() call, from 0
    if isinstance(watched, dict) and len(stats):
        stats["steps"] = watched.get("steps", int(result.train["step"].max()) + 1)
    evaluated = bool(stats[["eval_start", "eval_end"]].notna().any().any())
    seeds = int(stats["seeds"].max()) if len(stats) else 1
    tries = ((True, seeds > 1), (False, seeds > 1), (False, False)) if evaluated else ((True, False),)
    for batch_loss, spread in tries:
        table = _loss_table(stats, title, batch_loss, spread, evaluated, watched=bool(watched))
        if width is None or natural_width(table) <= width:
            break
    if not batch_loss:
        table.caption += "; on a wider terminal also: " + ", ".join(
            ["loss start/end (training batch)"] + (["min–max"] if seeds > 1 and not spread else [])
        )
    return table


def _loss_table(
    stats: pd.DataFrame, title: str, batch_loss: bool, spread: bool, evaluated: bool = True, watched: bool = False
) -> Table:
    floors = bool(stats["floor"].notna().any())
    accuracy = "eval_accuracy_end" in stats and bool(stats["eval_accuracy_end"].notna().any())  # train.task: classify
    seeds = int(stats["seeds"].max()) if len(stats) else 1
    table = Table(title=title, title_justify="left", caption_justify="left")
    columns = (
        ["variant", "steps"]
        + (["loss start", "loss end"] if batch_loss else [])
        + (["eval start", "eval end"] if evaluated else [])
    )
    columns += ["min–max"] if spread else []
    columns += ["floor", "above floor", "constant"] if floors else []
    columns += ["train-set loss end", "train acc end", "test acc end"] if accuracy else []
    for col in columns:
        if col == "variant":  # never cut a variant's name: the other columns are short numbers
            table.add_column(col, min_width=max([len(str(v)) for v in stats["variant"]] + [7]))
        else:
            table.add_column(col, justify="right")
    for _, r in stats.iterrows():
        cells = [str(r["variant"]), str(r["steps"])]
        cells += [_g(r["loss_start"]), _g(r["loss_end"])] if batch_loss else []
        cells += [_g(r["eval_start"]), _g(r["eval_end"])] if evaluated else []
        if spread:
            cells.append(f"{_g(r['eval_end_min'])} – {_g(r['eval_end_max'])}")
        if floors:
            cells += [_g(r["floor"]), _g(r["above_floor"]), _g(r["baseline"])]
        if accuracy:
            cells += [_g(r["train_set_loss_end"]), f"{r['train_accuracy_end']:.1%}", f"{r['eval_accuracy_end']:.1%}"]
        table.add_row(*cells)
    notes = [
        "eval: the test set; train-set loss, train acc: the whole training set (eval mode)"
        if accuracy
        else "eval: held-out batches"
        if evaluated
        else "loss: the value given to step() at the first and the last step; nothing was evaluated"
        if watched
        else "loss: the training batch's; nothing was evaluated"
    ]
    if spread:
        notes.append(f"min–max: of eval end over {seeds} seeds")
    if floors:
        notes += [
            "floor: the task's lowest achievable loss",
            "above floor: eval end − floor",
            "constant: the loss of the best constant prediction (a model that learnt nothing from its input)",
        ]
    table.caption = "; ".join(notes)
    return table


def _task_refs(result, s: pd.Series) -> str:
    """' (floor F, a constant prediction scores B)' from train.csv, or from an older meta.json."""
    meta = result.meta or {}
    floor, baseline = s.get("floor", math.nan), s.get("baseline", math.nan)
    if (floor is None or math.isnan(floor)) and isinstance(meta.get("task_floor"), (int, float)):
        floor, baseline = meta["task_floor"], meta.get("task_baseline")
    if floor is None or math.isnan(floor):
        return ""
    return f" (floor {_g(floor)}, a constant prediction scores {_g(baseline)})"


def train_headline(result) -> str:
    """One sentence: did the loss move, and how much did the first layer move against the last."""
    s = loss_summary(result.train).iloc[0]
    ref = _task_refs(result, s)
    move = layer_movement(result.params).groupby("layer")["movement"].median()
    move = move[move.index.isin(result.grads["layer"].unique())]  # blocks only (not a final norm at layer = depth)
    first, last = float(move.iloc[0]), float(move.iloc[-1])
    ratio = first / last if last > 0 else math.nan
    return (
        f"eval loss {_g(s['eval_start'])} → {_g(s['eval_end'])} in {s['steps']} steps{ref}; "
        f"layer {int(move.index[0])} moved {_g(first)} of its initial size, layer {int(move.index[-1])} {_g(last)} "
        f"(first/last = {_g(ratio)})"
    )


def learnt_headline(train: pd.DataFrame) -> str | None:
    """A trained compare's first sentence: which config learnt the most, by the final training-set loss
    (and accuracy) of a classify task, otherwise by the final eval loss (medians over seeds). None
    with fewer than two variants or nothing to judge by."""
    stats = loss_summary(train)
    by_train_set = bool(stats["train_set_loss_end"].notna().any())
    col = "train_set_loss_end" if by_train_set else "eval_end"
    stats = stats[stats[col].notna()]
    if len(stats) < 2:
        return None
    stats = stats.sort_values(col, kind="stable")
    accuracy = by_train_set and bool(stats["train_accuracy_end"].notna().all())

    def score(r) -> str:
        return f"{_g(r[col])} (accuracy {r['train_accuracy_end']:.1%})" if accuracy else _g(r[col])

    best, rest = stats.iloc[0], stats.iloc[1:]
    what = "training-set loss" if by_train_set else "eval loss"
    steps = "/".join(str(s) for s in dict.fromkeys(stats["steps"]))
    others = ", ".join(f"{score(r)} in {r['variant']}" for _, r in rest.iterrows())
    return (
        f"after {steps} steps {best['variant']} learnt the most: final {what} {score(best)}, against {others} (median over seeds)"
    )
