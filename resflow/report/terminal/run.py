"""Rich tables and headline sentences from the tidy tables (pandas only: never imports torch)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from resflow.results.stats import (
    EXPLODING,
    VANISHING,
    end_sites,
    finite_stats,
    flag,
    seed_ratios,
    seed_spread,
    site_stats,
    without_input_gradient,
)

BAR_LO, BAR_HI = -16, 4  # the bar's fixed log10 scale: 1e-16 ... 1e+4, never rescaled to the data
BAR_WIDTH = 20  # characters: one per decade
_EIGHTHS = " ▏▎▍▌▋▊▉█"
MAX_FULL_ROWS = 32  # deeper stacks show first, last and evenly spaced layers


def log_bar(value: float, lo: float = BAR_LO, hi: float = BAR_HI, width: int = BAR_WIDTH) -> str:
    """A bar whose length is log10(value) on the fixed scale [lo, hi]."""
    if value is None or not math.isfinite(value):
        return "non-finite".center(width)
    if value <= 0:
        return "·" + " " * (width - 1)
    frac = (math.log10(value) - lo) / (hi - lo)
    if frac <= 0:
        return "·" + " " * (width - 1)
    eighths = round(min(frac, 1.0) * width * 8)
    bar = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")
    bar = bar.ljust(width)
    return bar[:-1] + "▶" if frac > 1 else bar


SPARK_LEVELS = "▁▂▃▄▅▆▇█"  # eight levels over [BAR_LO, BAR_HI]: 2.5 decades each
SPARK_WIDTH = 24  # at most this many characters; deeper profiles are binned (median of each bin's log10)


def sparkline(values, lo: float = BAR_LO, hi: float = BAR_HI, width: int = SPARK_WIDTH) -> str:
    """A per-layer profile in one line: each character is log10 of a value on the fixed scale [lo, hi]
    (never rescaled to the data, so a flat profile looks flat); '!' marks a non-finite value and ' '
    a value at or below 10^lo (including 0). More values than `width` are binned in order."""
    logs = []
    for v in values:
        v = float(v)
        logs.append(math.nan if not math.isfinite(v) else -math.inf if v <= 0 else math.log10(v))
    if not logs:
        return ""
    bins = np.array_split(np.array(logs), min(width, len(logs)))
    chars = []
    for b in bins:
        if np.isnan(b).any():
            chars.append("!")
            continue
        level = (float(np.median(b)) - lo) / (hi - lo)
        chars.append(" " if level <= 0 else SPARK_LEVELS[min(len(SPARK_LEVELS) - 1, int(level * len(SPARK_LEVELS)))])
    return "".join(chars)


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def shown_rows(n: int, max_rows: int = MAX_FULL_ROWS) -> list[int | None]:
    """Indices to show: all when n <= max_rows, else every k-th from the first plus the last;
    None marks the ellipsis row before a last layer that is off the grid."""
    if n <= max_rows:
        return list(range(n))
    step = -(-n // (max_rows - 2))  # ceil
    picks: list[int | None] = list(range(0, n, step))
    if picks[-1] != n - 1:
        if picks[-1] != n - 2:
            picks.append(None)
        picks.append(n - 1)
    return picks


def shown_sites(sites: pd.DataFrame, max_rows: int = MAX_FULL_ROWS) -> tuple[list[int | None], str]:
    """Rows of a per-site table (columns layer, sublayer, in site order) to show, and the caption's
    note ('' when all are shown). Whole layers are picked, every sublayer of a picked layer shown (a
    transformer's attn and ffn rows together); None marks an ellipsis row."""
    layers = list(dict.fromkeys(int(v) for v in sites["layer"]))
    per_layer = max(1, -(-len(sites) // max(1, len(layers))))
    picked = shown_rows(len(layers), max(3, max_rows // per_layer))
    if len(picked) == len(layers):
        return list(range(len(sites))), ""
    index = {}
    for i, layer in enumerate(int(v) for v in sites["layer"]):
        index.setdefault(layer, []).append(i)
    rows: list[int | None] = []
    for p in picked:
        rows += [None] if p is None else index[layers[p]]
    step = picked[1] - picked[0]
    nth = {2: "2nd", 3: "3rd"}.get(step, f"{step}th")
    what = "layer" if per_layer > 1 else "site"
    both = " (all its sublayers)" if per_layer > 1 else ""
    return rows, f"every {nth} {what}{both} of {len(layers)} shown; "


def run_title(cfg) -> str:
    """The line above a run's table: the config in words (`run` prints it, `show` rebuilds it); the
    block family says its own part (resflow.config.families)."""
    m = cfg.model
    return f"{cfg.name}: {m.title(cfg.data)}, {cfg.dtype}, seeds {cfg.seed}…{cfg.seed + cfg.seeds - 1}"


def run_table(grads: pd.DataFrame, title: str = "") -> Table:
    stats = site_stats(grads)
    seeds = int(grads["seed"].nunique())
    last = float(stats["median"].iloc[end_sites(stats["layer"])[1]])  # the last block's input
    multi_sub = stats["sublayer"].nunique() > 1
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("layer", justify="right")
    if multi_sub:
        table.add_column("sublayer")
    table.add_column("‖∂loss/∂x‖" + (" median" if seeds > 1 else ""), justify="right")
    if seeds > 1:
        table.add_column(f"min–max ({seeds} seeds)", justify="right")
    pred = site_stats(grads, "predicted_input_grad_norm") if _has_prediction(grads) else None
    if pred is not None:
        table.add_column("predicted", justify="right")
    table.add_column("log10", justify="right")
    table.add_column(f"1e{BAR_LO} … 1e+{BAR_HI}", no_wrap=True)
    table.add_column("flag")
    rows, shown = shown_sites(stats)
    table.caption = _caption(shown)
    skipped = without_input_gradient(grads)  # any model's first block: its input needs no gradient
    if skipped:
        table.caption += "; no gradient: the input is the data, which needs none"
    for i in rows:
        if i is None:
            table.add_row(*["⋮"] * len(table.columns))
            continue
        r = stats.iloc[i]
        med = float(r["median"])
        cells = [str(int(r["layer"]))]
        if multi_sub:
            cells.append(str(r["sublayer"]))
        none = int(r["layer"]) in skipped  # no gradient at all, not a non-finite one
        cells.append("—" if none else fmt(med))
        if seeds > 1:
            cells.append(f"{fmt(float(r['min']))} – {fmt(float(r['max']))}")
        if pred is not None:
            cells.append(fmt(float(pred.iloc[i]["median"])))
        cells.append(f"{math.log10(med):+.2f}" if med > 0 and math.isfinite(med) else "—")
        cells.append("" if none else log_bar(med))
        bad = int(r["n_bad"])  # seeds left out of the median (resflow.results.stats.finite_stats)
        f = (
            "no gradient"
            if int(r["layer"]) in skipped
            else "non-finite"
            if bad == r["n"]
            else (f"{bad} of {int(r['n'])} non-finite" if bad else site_flag(med, last))
        )
        cells.append(
            Text(
                f,
                style={"vanishing": "yellow", "exploding": "red", "no gradient": "yellow"}.get(
                    f, "bold red" if bad or f == "non-finite" else ""
                ),
            )
        )
        table.add_row(*cells)
    return table


def site_flag(value: float, last: float) -> str:
    """A site's flag: its gradient against the last site's. Zero is finite: a zero gradient is
    "no gradient" where the last one is zero too, "vanishing" under a non-zero one; a non-zero one
    over a last of exactly zero "exploding"; only NaN/inf is "non-finite"."""
    if not (math.isfinite(value) and math.isfinite(last)):
        return "non-finite"
    if last == 0:
        return "no gradient" if value == 0 else flag(math.inf)
    return flag(value / last)


def _has_prediction(grads: pd.DataFrame) -> bool:
    col = "predicted_input_grad_norm"
    return col in grads and bool(grads[col].notna().any())


def _caption(shown: str = "") -> str:
    return (
        f"{shown}median, min and max over the seeds with finite values; "
        f"flags compare each layer with the last: vanishing < {VANISHING:g}×, exploding > {EXPLODING:g}×; "
        f"bar: log10 of the gradient norm on a fixed scale"
    )


def headline(grads: pd.DataFrame, dtype: str | None = None) -> str:
    """One sentence: how much of the last layer's gradient reaches the first layer: the summary's
    grad_ratio (the block inputs at both ends, `end_sites`; median over seeds). With `dtype`
    "float32", a first-layer gradient of exactly 0 under a non-zero last one says it may be underflow."""
    skipped = without_input_gradient(grads)
    if skipped:  # any model's first block, fed by the data: no gradient there, the ratio from the next
        who = (
            f"layer {skipped[0]}'s input has"
            if len(skipped) == 1
            else f"the inputs of layers {', '.join(map(str, skipped))} have"
        )
        return f"{who} no gradient (fed by the data directly, which needs none); " + headline(
            grads[~grads["layer"].isin(skipped)], dtype
        )
    stats = site_stats(grads)
    i, j = end_sites(stats["layer"])
    first, last = stats.iloc[i], stats.iloc[j]
    g0, gl = float(first["median"]), float(last["median"])
    name0 = _site_name(first, stats)
    namel = _site_name(last, stats)
    if not (math.isfinite(g0) and math.isfinite(gl)):
        return f"non-finite gradients: {name0} has {fmt(g0)}, {namel} has {fmt(gl)}"
    if gl == 0:
        return f"{namel} receives no gradient at all (0.0); {name0} receives {fmt(g0)}"
    ratio = finite_stats(seed_ratios(grads))[0]  # = median of summary.csv's grad_ratio
    ratio = g0 / gl if math.isnan(ratio) else ratio
    seeds = int(grads["seed"].nunique())
    bad = int(max(first["n_bad"], last["n_bad"]))
    over = (
        f" (median over {seeds - bad} of {seeds} seeds: {bad} non-finite)"
        if bad
        else f" (median over {seeds} seeds{_spread_text(grads)})"
        if seeds > 1
        else ""
    )
    verdict = {"vanishing": ": the gradient vanishes", "exploding": ": the gradient explodes"}.get(flag(ratio), "")
    underflow = (
        " (exactly 0 in float32, whose smallest number is ~1e-45: if the gradient underflowed, "
        "--set dtype=float64 shows how small it is)"
        if g0 == 0 and dtype == "float32"
        else ""
    )
    return f"{name0} receives {fmt(ratio)} × the gradient of {namel}{over}{verdict}{underflow}"


def _spread_text(grads: pd.DataFrame) -> str:
    """'; SD of log10 over seeds 0.12, IQR 1.1e-12 – 2.3e-12' of each seed's first/last ratio (last step;
    a zero last gives inf, which seed_spread leaves out, as before)."""
    sd, q25, q75 = seed_spread(seed_ratios(grads))
    return f"; SD of log10 {sd:.2g}, IQR {fmt(q25)} – {fmt(q75)}" if math.isfinite(sd) else ""


def _site_name(row, stats) -> str:
    name = f"layer {int(row['layer'])}"
    return f"{name} ({row['sublayer']})" if stats["sublayer"].nunique() > 1 else name


def natural_width(table: Table) -> int:
    """The width `table` takes when nothing constrains it (to choose columns that fit a terminal)."""
    from resflow.report.terminal.console import PlainConsole

    console = PlainConsole(width=10_000)  # (as it will be printed: a name's `[/bold]` is text)
    return table.__rich_measure__(console, console.options).maximum


def range_flag(value: float, good: tuple[float, float] | None) -> str:
    """ "low" / "high" for a value outside a quantity's rule-of-thumb range (resflow.quantities), else ""."""
    if good is None or not math.isfinite(value):
        return "" if math.isfinite(value) else "non-finite"
    return "low" if value < good[0] else "high" if value > good[1] else ""


def measure_table(grads: pd.DataFrame, name: str, title: str = "") -> Table:
    """One grads.csv quantity of the registry (`resflow show --measure NAME`) per site at the last
    recorded step: median and min–max over seeds, log10, a bar on its scale, and, for a quantity with a
    rule-of-thumb range (the optimizer update's ~1e-3 per step), a flag on a value outside it."""
    from resflow import quantities

    q = quantities.GRADS[name]
    stats = site_stats(grads, name)
    seeds = int(grads["seed"].nunique()) if "seed" in grads else 1
    multi_sub = stats["sublayer"].nunique() > 1
    unit = f" ({q.unit})" if q.unit else ""
    table = Table(title=title or f"{name}: {q.label}{unit}", title_justify="left", caption_justify="left")
    table.add_column("layer", justify="right")
    if multi_sub:
        table.add_column("sublayer")
    table.add_column(q.label + (" median" if seeds > 1 else ""), justify="right")
    if seeds > 1:
        table.add_column(f"min–max ({seeds} seeds)", justify="right")
    log = q.scale == "log"
    if log:
        table.add_column("log10", justify="right")
        table.add_column(f"1e{BAR_LO} … 1e+{BAR_HI}", no_wrap=True)
    table.add_column("flag")
    rows, shown = shown_sites(stats)
    good = f"; flag: outside {q.good[0]:g} … {q.good[1]:g}" if q.good else ""
    table.caption = f"{shown}{q.doc}; median, min and max over the seeds with finite values{good}"
    for i in rows:
        if i is None:
            table.add_row(*["⋮"] * len(table.columns))
            continue
        r = stats.iloc[i]
        med = float(r["median"])
        cells = [str(int(r["layer"]))]
        if multi_sub:
            cells.append(str(r["sublayer"]))
        cells.append(fmt(med))
        if seeds > 1:
            cells.append(f"{fmt(float(r['min']))} – {fmt(float(r['max']))}")
        if log:
            cells.append(f"{math.log10(med):+.2f}" if med > 0 and math.isfinite(med) else "—")
            cells.append(log_bar(med) if med > 0 and math.isfinite(med) else "")
        f = range_flag(med, q.good)
        cells.append(Text(f, style="bold red" if f else ""))
        table.add_row(*cells)
    return table
