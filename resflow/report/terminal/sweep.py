"""Tables and headlines for sweeps and comparisons, and `show` for any results dir (pandas only).

sweep    one row per point: the swept values, the first/last-layer gradient ratio (median over seeds,
         min-max), its log10 and bar, the fitted gain per layer, the flag; then one sentence per group
         of the other swept keys telling how the ratio changes with depth.
compare  one row per layer, one gradient column (and bar) per config, the ratio between them; then which
         config keeps the first-layer gradient closest to the last-layer one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from resflow.report.terminal.run import (
    BAR_HI,
    BAR_LO,
    SPARK_WIDTH,
    fmt,
    headline,
    log_bar,
    natural_width,
    run_table,
    shown_sites,
    sparkline,
)
from resflow.report.terminal.train import learnt_headline, loss_table
from resflow.results.stats import EXPLODING, VANISHING, finite_stats, flag, profile_medians, seed_spread, site_stats
from resflow.results.tables import depth_axis
from resflow.results.values import as_number
from resflow.theory.overlay import comparison_line, log_ratio_gap

FLAG_STYLE = {"vanishing": "yellow", "exploding": "red", "non-finite": "bold red", "no gradient": "yellow"}


def _median(values) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.median(arr)) if len(arr) else float("nan")


def _cell(value) -> str:
    if isinstance(value, str) and as_number(value) is not None:  # '1.0' read back beside 'deepnorm': 1, as written
        value = as_number(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def last_step(df: pd.DataFrame) -> pd.DataFrame:
    """Each variant's rows at its last recorded step (training results have several; measurements: step 0)."""
    if "step" not in df.columns or df.empty:
        return df
    return df[df["step"] == df.groupby("variant", sort=False)["step"].transform("max")]


def point_stats(summary: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per point (variant), in order: swept values, median/min/max ratio, median gain, seeds;
    at each point's last step (the step the tables show). Seeds whose gradients are all finite but
    whose ratio is 0/0 (no gradient at the first nor the last layer) are left out of the ratio's
    statistics; `no_gradient` when that is every seed. Vectorised over the points (one groupby each):
    `finite_stats` and `seed_spread` per point, as `point_stats_reference` computes them one by one."""
    last = last_step(summary)
    if not len(last):
        return point_stats_reference(summary, columns)
    codes, variants = pd.factorize(last["variant"])
    by = pd.Series(codes, index=last.index)
    ratio = last["grad_ratio"].to_numpy(dtype=float)
    finite = last["finite"].astype(bool).groupby(by, sort=False).all()
    ok = np.isfinite(ratio)
    kept = pd.Series(np.where(ok, ratio, np.nan), index=last.index).groupby(by, sort=False)
    n_ratio = pd.Series(~np.isnan(ratio), index=last.index).groupby(by, sort=False).sum()
    spread = _seed_spread(ratio, by)

    def median_all(column: str) -> np.ndarray:  # np.median: NaN if any value is NaN
        if column not in last:
            return np.full(len(variants), np.nan)
        values = pd.Series(last[column].to_numpy(dtype=float), index=last.index).groupby(by, sort=False)
        return np.where(values.count() == values.size(), values.median(), np.nan)

    first = last.groupby(by, sort=False).head(1)
    out = {c: first[c].to_numpy() for c in columns if c in last}
    out.update(
        variant=np.asarray(variants, dtype=object),
        ratio=kept.median().to_numpy(),
        ratio_min=kept.min().to_numpy(),
        ratio_max=kept.max().to_numpy(),
        no_gradient=(finite & (n_ratio == 0)).to_numpy(),
        log10_sd=spread[0],
        ratio_q25=spread[1],
        ratio_q75=spread[2],
        gain=median_all("gain_per_layer"),
        seeds=by.groupby(by, sort=False).size().to_numpy(),
        finite=finite.to_numpy(),
        predicted=median_all("predicted_grad_ratio"),
    )
    return pd.DataFrame(out)


def _seed_spread(ratio: np.ndarray, by: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`seed_spread` of each point's ratios: SD of log10 over the finite positive ones (NaN with fewer
    than two), and their 25th/75th percentiles (numpy's linear interpolation; NaN with none)."""
    good = np.isfinite(ratio) & (ratio > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = pd.Series(np.where(good, np.log10(np.where(good, ratio, 1.0)), np.nan), index=by.index)
    sd = logs.groupby(by, sort=False).std(ddof=1).to_numpy()
    groups = pd.Series(np.where(good, ratio, np.nan), index=by.index).groupby(by, sort=False)
    return sd, groups.quantile(0.25).to_numpy(), groups.quantile(0.75).to_numpy()


def point_stats_reference(summary: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`point_stats` one point at a time with the scalar statistics (the reference the tests hold it to)."""
    rows = []
    for variant, g in last_step(summary).groupby("variant", sort=False):
        ratio = g["grad_ratio"].to_numpy(dtype=float)
        finite = bool(g["finite"].all())
        if finite:
            ratio = ratio[~np.isnan(ratio)]
        stats = finite_stats(ratio)[:3]  # (the figures' statistic too)
        sd, q25, q75 = seed_spread(ratio)
        row = {c: g[c].iloc[0] for c in columns if c in g}
        row.update(
            variant=variant,
            ratio=stats[0],
            ratio_min=stats[1],
            ratio_max=stats[2],
            no_gradient=finite and not len(ratio),
            log10_sd=sd,
            ratio_q25=q25,
            ratio_q75=q75,
            gain=_median(g["gain_per_layer"]),
            seeds=len(g),
            finite=finite,
            predicted=_median(g["predicted_grad_ratio"]) if "predicted_grad_ratio" in g else float("nan"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def spark_scale(profiles) -> tuple[float, float]:
    """A log10 scale shared by several profiles, spanning their finite positive values (at least half a
    decade, centred, so a flat profile stays flat at mid height), padded by half a level each side so
    the smallest value draws as ▁ rather than blank. The fixed 1e-16 … 1e+4 scale of the bars (2.5
    decades a level) drew profiles 3-5x apart as the same solid blocks."""
    logs = np.concatenate(
        [np.log10(v[np.isfinite(v) & (v > 0)]) for v in (np.asarray(p, dtype=float) for p in profiles)] or [np.array([])]
    )
    if not len(logs):
        return float(BAR_LO), float(BAR_HI)
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < 0.5:
        mid = (lo + hi) / 2
        lo, hi = mid - 0.25, mid + 0.25
    pad = (hi - lo) / 14  # half a level of 8 over the padded span
    return lo - pad, hi + pad


def scale_label(lo: float, hi: float) -> str:
    return f"{10**lo:.2g} … {10**hi:.2g}"


def profile_sparklines(grads: pd.DataFrame | None = None, width: int = 8, profiles: dict | None = None):
    """variant -> its per-layer profile (median over seeds) as a sparkline, all on one log scale fitted
    to these profiles; and that scale (log10 lo, hi). `profiles`: those medians already computed
    (`profile_medians`, a sweep's points), else computed from `grads`."""
    medians = profiles if profiles is not None else profile_medians(grads)
    lo, hi = spark_scale(medians.values())
    return {v: sparkline(m, lo=lo, hi=hi, width=width) for v, m in medians.items()}, (lo, hi)


def sweep_table(
    summary: pd.DataFrame,
    columns: list[str],
    title: str = "",
    grads: pd.DataFrame | None = None,
    width: int | None = None,
    profiles: dict | None = None,
) -> Table:
    """`width`: the terminal's. Columns are dropped, least useful first (the 0 → L sparkline, min–max,
    log10, theory), until the table fits without cutting a cell; the CSVs and a wider terminal have them all.
    The sparklines: from `profiles` (variant -> median per site, `profile_medians`) or `grads`."""
    stats = point_stats(summary, columns)
    if profiles is not None or grads is not None:
        sparks, scale = profile_sparklines(grads, profiles=profiles)
    else:
        sparks, scale = {}, (BAR_LO, BAR_HI)
    has_theory = bool(stats["predicted"].notna().any()) if len(stats) else False
    options = [
        (True, True, True, True),
        (False, True, True, True),
        (False, False, True, True),
        (False, False, False, True),
        (False, False, False, False),
    ]
    seeds = int(stats["seeds"].max()) if len(stats) else 0
    rows, sections = _sweep_rows(stats, columns, seeds, has_theory, sparks)  # every cell, once
    widest = [_widest(rows)] if width is not None and rows else []
    fits = False
    for spark, spread, log10, theory in [(bool(sparks),) + o[:3] for o in options[:1]] + [(False,) + o[:3] for o in options]:
        shape = (seeds, spread, log10, theory and has_theory, sparks if spark else {}, scale)
        # the width from one row of each column's widest cell: what the whole table measures (Rich
        # takes a column's width as its widest cell's), without building and measuring it per try
        if width is None or natural_width(_sweep_table(widest, [], columns, title, *shape)) <= width:
            fits = width is not None
            break
    # (nothing fits: the narrowest, a row per point, as Rich wraps its cells)
    table = _sweep_table(rows, sections, columns, title, *shape, stacked=fits and _stackable(rows))
    dropped = [
        name
        for name, kept, wanted in (
            ("0 → L", spark, bool(sparks)),
            ("min–max, IQR", spread, True),
            ("log10, SD log10", log10, True),
            ("theory", theory, has_theory),
        )
        if wanted and not kept
    ]
    if dropped:
        table.caption += f"; on a wider terminal also: {', '.join(dropped)}"
    return table


def _sweep_rows(stats: pd.DataFrame, columns: list[str], seeds: int, theory: bool, sparks: dict) -> tuple[list[dict], list[int]]:
    """Each point's cells, keyed by column (every column a table may show), and the rows a rule goes
    above (a new group of the outer axes)."""
    rows, sections, previous = [], [], None
    for i, r in enumerate(stats.to_dict("records")):
        group = tuple(r[c] for c in columns[:-1])  # a rule between groups of the outer axes
        if previous is not None and group != previous:
            sections.append(i)
        previous = group
        ratio = float(r["ratio"])
        no_gradient = bool(r["no_gradient"])  # 0/0 in every seed: no gradient at the first nor the last layer
        cells = {c: _cell(r[c]) for c in columns}
        cells["ratio"] = "0/0" if no_gradient else fmt(ratio)
        cells["min–max"] = f"{fmt(float(r['ratio_min']))} – {fmt(float(r['ratio_max']))}"
        q25, q75 = float(r["ratio_q25"]), float(r["ratio_q75"])
        cells["IQR"] = f"{fmt(q25)} – {fmt(q75)}" if math.isfinite(q25) else "—"
        cells["log10"] = f"{math.log10(ratio):+.1f}" if ratio > 0 and math.isfinite(ratio) else "—"
        sd = float(r["log10_sd"])
        cells["SD log10"] = f"{sd:.2f}" if math.isfinite(sd) else "—"
        cells["bar"] = "" if no_gradient else log_bar(ratio)
        gain = float(r["gain"])
        cells["gain"] = fmt(gain) if math.isfinite(gain) else "—"  # one layer: nothing to fit
        if theory:
            pred = float(r["predicted"])
            gap = log_ratio_gap(ratio, pred)
            cells["predicted"] = fmt(pred) if math.isfinite(pred) else "—"
            cells["meas/pred"] = f"{math.exp(gap):.3g}" if math.isfinite(gap) else "—"
        f = "no gradient" if no_gradient else flag(ratio) if r["finite"] else "non-finite"
        cells["flag"] = Text(f, style=FLAG_STYLE.get(f, ""))
        cells["0 → L"] = sparks.get(r["variant"], "")
        rows.append(cells)
    return rows, sections


def _stackable(rows: list[dict]) -> bool:
    """Can each group's rows be drawn as one row of multi-line cells (`_sweep_table`'s `stacked`):
    every cell one line, each column's cells all text or all Text."""
    for key in rows[0] if rows else ():
        cells = [r[key] for r in rows]
        if all(type(c) is str for c in cells):
            if any("\n" in c or "\r" in c for c in cells):
                return False
        elif not all(isinstance(c, Text) and c.plain.isprintable() and c.justify in (None, "left") for c in cells):
            return False  # (a Text cell is padded on its right: `_stack`)
    return True


def _stack(cells: list, width: int = 0):
    """One multi-line cell of these one-line cells: text, or Text each padded to the column's `width`
    within its own style (as Rich pads a one-line Text cell: its style over the padding too)."""
    if all(type(c) is str for c in cells):
        return "\n".join(cells)
    padded = []
    for c in cells:
        c = c.copy()
        c.pad_right(width - c.cell_len)
        padded.append(c)
    return Text("\n").join(padded)


def _widest(rows: list[dict]) -> dict:
    """Each column's widest cell over `rows`, as `natural_width` measures a cell."""

    from resflow.report.terminal.console import PlainConsole

    console = PlainConsole(width=10_000)  # (natural_width's)
    options = console.options  # (a property that builds them anew: once, not per cell)
    widest: dict = {}
    for key in rows[0]:
        widths = [_cell_width(console, options, r[key]) for r in rows]
        widest[key] = rows[int(np.argmax(widths))][key]
    return widest


def _cell_width(console, options, cell) -> int:
    """What Rich measures as a cell's maximum width: a one-line cell's cells on the screen, counted
    directly (Rich's Measurement builds a Text per cell to find the same), anything else measured."""
    from rich.cells import cell_len
    from rich.measure import Measurement

    from resflow.report.terminal.console import printable

    if isinstance(cell, Text):
        text = cell.plain
    elif type(cell) is str and ":" not in cell:  # (`:name:` would be drawn as an emoji)
        text = printable(cell)
    else:
        text = None
    if text is not None and text.isprintable():  # (one line: no line break, tab or other control)
        return min(cell_len(text), options.max_width)
    return Measurement.get(console, options, cell).maximum


def _sweep_table(
    rows: list[dict],
    sections: list[int],
    columns: list[str],
    title: str,
    seeds: int,
    spread: bool,
    log10: bool,
    theory: bool,
    sparks: dict,
    scale: tuple[float, float] = (BAR_LO, BAR_HI),
    stacked: bool = False,
) -> Table:
    """The table of the columns asked for, from the cells `_sweep_rows` made (a rule above `sections`).
    `stacked`: each group's rows as one row of multi-line cells, which Rich draws as the same lines
    several times faster (a 10,000-run sweep's 1,000 rows: ~1 s of the CLI's tail) — only for a table
    that fits its console unshrunk (no cell wrapped) and whose cells are one line each (`_stackable`)."""
    spread = spread and seeds > 1
    compact = not log10
    table = Table(title=title, title_justify="left", caption_justify="left")
    keys = list(columns)
    for c in columns:
        table.add_column(c, justify="right")
    table.add_column("grad first/last" + (" median" if seeds > 1 else ""), justify="right")
    keys.append("ratio")
    if spread:
        table.add_column(f"min–max ({seeds} seeds)", justify="right")
        table.add_column("IQR", justify="right")
        keys += ["min–max", "IQR"]
    if log10:
        table.add_column("log10", justify="right")
        keys.append("log10")
        if seeds > 1:
            table.add_column("SD log10", justify="right")
            keys.append("SD log10")
    table.add_column(f"1e{BAR_LO} … 1e+{BAR_HI}", no_wrap=True)
    table.add_column("gain/layer" if not compact else "gain", justify="right")
    keys += ["bar", "gain"]
    if theory:
        table.add_column("predicted", justify="right")
        table.add_column("meas/pred", justify="right")
        keys += ["predicted", "meas/pred"]
    table.add_column("flag")
    keys.append("flag")
    if sparks:
        table.add_column("0 → L", no_wrap=True)
        keys.append("0 → L")
    rules = set(sections)
    if stacked and rows:
        from rich.cells import cell_len

        widths = {  # a Text column's width (left-justified: the flag)
            k: max(cell_len(str(col.header)), *(r[k].cell_len for r in rows))
            for k, col in zip(keys, table.columns)
            if isinstance(rows[0][k], Text)
        }
        bounds = [0, *sorted(rules - {0}), len(rows)]
        for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if n:
                table.add_section()
            table.add_row(*(_stack([cells[k] for cells in rows[a:b]], widths.get(k, 0)) for k in keys))
    else:
        for i, cells in enumerate(rows):
            if i in rules:
                table.add_section()
            table.add_row(*(cells[k] for k in keys))
    table.caption = (
        "grad first/last = ‖∂loss/∂x‖ at the first layer over the last layer's (1 = no loss on the way back); "
        "gain(/layer): the fitted factor per layer; bar: log10 of the ratio on a fixed scale"
        + ("; IQR: 25th–75th percentile over seeds" if spread else "")
        + ("; SD log10: standard deviation over seeds of log10 first/last" if log10 and seeds > 1 else "")
        + (
            "; predicted: the theory's first/last (— outside its domain), meas/pred = measured over predicted first/last "
            "(1 = exact; its log is the error of the log ratio, on the same scale at the critical point as anywhere)"
            if theory
            else ""
        )
        + (
            f"; 0 → L: ‖∂loss/∂x‖ from layer 0 to the last, log10 on {scale_label(*scale)} (shared by every row)"
            if sparks
            else ""
        )
    )
    return table


def depth_story(summary: pd.DataFrame, columns: list[str]) -> list[str]:
    """One sentence per group of the other swept keys: the ratio at the smallest and largest depth,
    and the fitted factor per added layer (exp of the slope of ln ratio against depth)."""
    columns = depth_axis(summary, columns)  # a factory's depth knob (model.kwargs.n_layer) as depth
    stats = point_stats(summary, columns)
    if "depth" not in stats or stats["depth"].nunique() < 2:
        return [_extremes(stats, columns)] if len(stats) > 1 else []
    others = [c for c in columns if c != "depth"]
    lines = []
    groups = stats.groupby(others, sort=False) if others else [((), stats)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("depth")
        d = g["depth"].to_numpy(dtype=float)
        ratio = g["ratio"].to_numpy(dtype=float)
        ok = np.isfinite(ratio) & (ratio > 0)
        label = ", ".join(f"{c}={_cell(v)}" for c, v in zip(others, key)) + ": " if others else ""
        lo, hi = g.iloc[0], g.iloc[-1]
        text = (
            f"{label}first/last-layer gradient {fmt(float(lo['ratio']))} at depth {int(lo['depth'])} → "
            f"{fmt(float(hi['ratio']))} at depth {int(hi['depth'])}"
        )
        fit = np.polyfit(d[ok], np.log(ratio[ok]), 1) if ok.sum() >= 2 and np.ptp(d[ok]) > 0 else None
        if fit is not None:
            per_layer = float(np.exp(fit[0]))
            text += f" (×{per_layer:.3g} per added layer): it {_trend(per_layer, float(np.ptp(d[ok])))} with depth"
        text += _crossing(d, ratio, fit)
        lines.append(text)
    return lines


def _crossing(depths: np.ndarray, ratio: np.ndarray, fit) -> str:
    """'; below 1e-3 (vanishing) from depth 16 of those swept (the fit crosses at depth ≈ 13)': the
    first swept depth whose median ratio is past a flag's threshold, and where the fitted line crosses it."""
    for threshold, name, past in ((VANISHING, "below", np.less), (EXPLODING, "above", np.greater)):
        hit = np.flatnonzero(past(ratio, threshold) & np.isfinite(ratio))
        if not len(hit):
            continue
        text = f"; {name} {threshold:g} ({'vanishing' if threshold < 1 else 'exploding'}) from depth {int(depths[hit[0]])} of those swept"
        if fit is not None and fit[0] != 0:
            at = (math.log(threshold) - fit[1]) / fit[0]
            if depths.min() <= at <= depths.max():
                text += f" (the fit crosses {threshold:g} at depth ≈ {at:.3g})"
        return text
    return ""


def _trend(per_layer: float, span: float) -> str:
    """What a factor per added layer does over the `span` of depths swept, in the flags' terms: level
    if the ratio changes less than 2x across it; exponential if it changes more than the
    vanishing/exploding thresholds (1000x); otherwise it shrinks or grows."""
    log_total = span * math.log(per_layer)  # (per_layer ** span can overflow a float)
    if math.log(0.5) <= log_total <= math.log(2):
        return "stays level"
    if log_total < math.log(VANISHING):
        return "vanishes exponentially"
    if log_total > math.log(EXPLODING):
        return "explodes exponentially"
    return "shrinks" if log_total < 0 else "grows"


def _extremes(stats: pd.DataFrame, columns: list[str]) -> str:
    dist = np.abs(np.log10(stats["ratio"].to_numpy(dtype=float)))
    dist = np.where(np.isfinite(dist), dist, np.inf)
    best, worst = stats.iloc[int(np.argmin(dist))], stats.iloc[int(np.argmax(dist))]
    return (
        f"closest to 1 (the first layer gets the last layer's gradient): {best['variant']} ({fmt(float(best['ratio']))}); "
        f"furthest: {worst['variant']} ({fmt(float(worst['ratio']))})"
    )


# ---------------------------------------------------------------------------------------------
# compare


def compare_table(grads: pd.DataFrame, title: str = "", width: int | None = None) -> Table:
    """`width`: the terminal's; the bars are shown for two configs on a terminal wide enough."""
    variants = list(dict.fromkeys(grads["variant"]))
    stats = {v: site_stats(grads[grads["variant"] == v]) for v in variants}
    longest = max(variants, key=lambda v: len(stats[v]))
    sites = stats[longest][["layer", "sublayer"]]
    multi_sub = sites["sublayer"].nunique() > 1
    bars = len(variants) == 2 and (width is None or width >= 110)
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("layer", justify="right")
    if multi_sub:
        table.add_column("sublayer")
    for v in variants:
        table.add_column(f"{v} ‖∂loss/∂x‖", justify="right")
        if bars:
            table.add_column(f"1e{BAR_LO} … 1e+{BAR_HI}", no_wrap=True)
    for v in variants[1:]:
        table.add_column(f"{v} / {variants[0]}", justify="right")
    lookup = {v: {(int(r.layer), r.sublayer): float(r.median) for r in s.itertuples()} for v, s in stats.items()}
    rows, shown = shown_sites(sites)
    for i in rows:
        if i is None:
            table.add_row(*["⋮"] * len(table.columns))
            continue
        site = (int(sites.iloc[i]["layer"]), sites.iloc[i]["sublayer"])
        cells = [str(site[0])] + ([str(site[1])] if multi_sub else [])
        values = [lookup[v].get(site) for v in variants]
        for value in values:
            cells.append(fmt(value) if value is not None else "—")
            if bars:
                cells.append(log_bar(value) if value is not None else "")
        base = values[0]
        for value in values[1:]:
            ok = value is not None and base not in (None, 0.0)
            cells.append(fmt(value / base) if ok else "—")
        table.add_row(*cells)
    table.caption = f"{shown}median over seeds" + ("; bar: log10 of the gradient norm on a fixed scale" if bars else "")
    return table


def compare_profiles(grads: pd.DataFrame) -> Table:
    """One row per config: its per-layer profile as a sparkline, every row on one log scale fitted to
    the profiles compared (▁ the smallest median gradient of any of them, █ the largest)."""
    sparks, scale = profile_sparklines(grads, width=SPARK_WIDTH)
    table = Table(title="per-layer profiles", title_justify="left", caption_justify="left")
    table.add_column("config")
    table.add_column("‖∂loss/∂x‖ median, layer 0 → last", no_wrap=True)
    for variant, line in sparks.items():
        table.add_row(str(variant), line)
    table.caption = f"log10 on {scale_label(*scale)}, the same scale for every row (▁ lowest, █ highest)"
    return table


def compare_headlines(result) -> list[str]:
    """A compare's sentences: when the configs trained, what they learnt first, then the gradient."""
    train = getattr(result, "train", None)
    learnt = learnt_headline(train) if train is not None and len(train) else None
    return [line for line in (learnt, compare_headline(result.summary)) if line]


def compare_headline(summary: pd.DataFrame) -> str:
    """Which config keeps the first-layer gradient closest to the last-layer one (|log10 ratio| least)."""
    rows = [(v, _median(g["grad_ratio"])) for v, g in last_step(summary).groupby("variant", sort=False)]

    def distance(item):
        r = item[1]
        return abs(math.log10(r)) if r > 0 and math.isfinite(r) else math.inf

    best = min(rows, key=distance)
    others = ", ".join(f"{fmt(r)} × in {v}" for v, r in rows if v != best[0])
    text = (
        f"{best[0]} keeps the first-layer gradient closest to the last-layer one: its first layer receives "
        f"{fmt(best[1])} × the last layer's gradient, against {others} (median over seeds)"
    )
    at_init = "step" not in summary or (summary["step"] == 0).all()
    if at_init and "norm" in summary and summary["norm"].nunique() > 1:  # the reading people take wrongly
        text += (
            "; that is at initialisation: whether a norm placement trains is another question "
            "(post-norm's trouble shows in training: `resflow compare train-postln train-preln`)"
        )
    return text


# ---------------------------------------------------------------------------------------------
# show


def renderables(result, width: int | None = None) -> list:
    """What `resflow show` prints for a results dir of any kind (run, sweep, compare)."""
    meta = result.meta or {}
    kind = meta.get("kind") or ("compare" if result.grads["variant"].nunique() > 1 else "run")
    name = (result.config or {}).get("name") or str(result.path)
    trained = [loss_table(result, width=width)] if getattr(result, "train", None) is not None and len(result.train) else []
    if kind == "sweep":
        columns = [a["column"] for a in meta.get("axes", [])]
        return [
            sweep_table(result.summary, columns, title=sweep_title(name, result.summary), grads=result.grads, width=width),
            *depth_story(result.summary, columns),
            *trained,
        ]
    if kind == "compare":
        refs = meta.get("refs") or list(dict.fromkeys(result.grads["variant"]))
        return [
            compare_table(result.grads, width=width, title=compare_title(refs, result.grads)),
            compare_profiles(result.grads),
            *compare_headlines(result),
            *trained,
        ]
    return [
        run_table(result.grads, title=_stored_title(result)),
        headline(result.grads, dtype=meta.get("dtype")),
        comparison_line(result.summary, meta.get("theory", "")),
        *trained,
    ]


def _stored_title(result) -> str:
    """`run`'s title line, rebuilt from the dir's config.yaml (its name alone if that cannot be read)."""
    from resflow.config.loading import load_stored_config
    from resflow.errors import ResflowError
    from resflow.report.terminal.run import run_title

    try:
        return run_title(load_stored_config(dict(result.config)))
    except (ResflowError, TypeError, ValueError):
        return str(result.grads["variant"].iloc[0])


def sweep_title(name: str, summary: pd.DataFrame) -> str:
    """'<name> sweep: N points', and the training step the gradients are from when the points trained."""
    title = f"{name} sweep: {summary['variant'].nunique()} points"
    return title + _step_note(summary)


def _step_note(df: pd.DataFrame) -> str:
    steps = sorted(set(last_step(df)["step"])) if "step" in df.columns else [0]
    return f" (‖∂loss/∂x‖ after training: step {', '.join(str(int(s)) for s in steps)})" if steps != [0] else ""


def compare_title(refs: list[str], grads: pd.DataFrame) -> str:
    """'compare: a vs b', and the step the gradients are from when the configs trained."""
    return "compare: " + " vs ".join(refs) + _step_note(grads)
