"""Figures from the tidy tables: per-layer profiles, depth curves, heatmaps, the parameter view.

matplotlib through its object API only (Figure + FigureCanvasAgg, never pyplot: no global state, no
backend switching for anyone else in the process); never torch. Each `*_figure` function takes the
DataFrames of resflow.results.files and returns the Figure; its first Axes holds exactly the plotted
numbers (tests read them back). `figures(result)` picks the figures a results dir calls for and
`write_figures` saves them.

Conventions, the same in every figure: log y-axes whose limits come from the true range of every
line (and band, and threshold guide) drawn, rounded out to whole decades, with decades labelled;
a line is the median over seeds, the band min-max over seeds; values a log axis cannot show
(0, nan, inf) are marked, never silently dropped.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter

from resflow import quantities
from resflow._sys.files import atomic_file
from resflow.errors import FigureError
from resflow.results.stats import EXPLODING, VANISHING, end_sites, finite_stats, seed_ratios, site_stats
from resflow.results.tables import CONFIG_COLUMNS, depth_axis
from resflow.results.values import all_numbers, as_number, ordered, sort_key
from resflow.results.values import show as _show

MAX_GUIDED = 4  # profiles with more lines than this get no per-line threshold guides
FIGSIZE = (8.0, 4.8)  # inches
DPI = 150  # so a PNG is 1200 x 720 pixels
FORMATS = ("png", "svg", "pdf")
GUIDE_STYLE = dict(color="0.45", linestyle=":", linewidth=1.0)
BAD_COLOR = "#d62728"
SUBLAYER_MARKERS = {"attn": "o", "ffn": "^", "mlp": None}
_MEASURES = {
    "variant",
    "seed",
    "step",
    "layer",
    "sublayer",
    "grad_first",
    "grad_last",
    "grad_ratio",
    "log10_grad_ratio",
    "gain_per_layer",
    "finite",
    *quantities.GRADS,  # the measured quantities (resflow.quantities)
    "wall_time_s",
    "log10_ratio_sd",
    "ratio_q25",
    "ratio_q75",
}


class ResflowFigure(Figure):
    """A Figure that shows itself in a notebook (Jupyter's `_repr_png_`), with no pyplot and no
    `%matplotlib inline`: a bare Figure displays there only as its text repr."""

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=NOTEBOOK_DPI)
        return buf.getvalue()


NOTEBOOK_DPI = 100  # inline in a notebook: 800 x 480 pixels


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = ResflowFigure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Statistics over seeds


def swept_keys(summary: pd.DataFrame) -> list[str]:
    """The config columns that vary across the table's variants (what a sweep swept), depth first."""
    keys = []
    for col in summary.columns:
        if col in _MEASURES or col.startswith("predicted_") or col in ("chi1", "depth_scale"):
            continue
        if summary[col].nunique(dropna=False) > 1:
            keys.append(col)
    return sorted(keys, key=lambda k: (k != "depth", list(summary.columns).index(k)))


def point_label(row: pd.Series | dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={_show(row[k])}" for k in keys)


# ---------------------------------------------------------------------------------------------
# Axes helpers


def log_limits(*arrays, pad_decades: int = 0) -> tuple[float, float]:
    """Whole-decade limits covering every finite positive value of every array."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays] or [np.array([])])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return 1e-1, 1e1
    lo = math.floor(math.log10(vals.min())) - pad_decades
    hi = math.ceil(math.log10(vals.max())) + pad_decades
    if hi - lo < 2:  # at least two decades, so a flat line looks flat
        lo, hi = lo - (2 - (hi - lo)) // 2 - (2 - (hi - lo)) % 2, hi + (2 - (hi - lo)) // 2
    return 10.0**lo, 10.0**hi


def decade_ticks(lo_exp: int, hi_exp: int, max_labels: int = 12) -> list[int]:
    step = max(1, math.ceil((hi_exp - lo_exp) / max_labels))
    start = lo_exp + (-lo_exp) % step  # keep 10^0 on the grid when it is in range
    return list(range(start, hi_exp + 1, step))


def set_log_axis(ax, lo: float, hi: float, axis: str = "y") -> None:
    """A log axis fixed to [lo, hi] (whole decades), every decade ticked, decades labelled 10^k."""
    lo_e, hi_e = round(math.log10(lo)), round(math.log10(hi))
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}lim")(10.0**lo_e, 10.0**hi_e)
    major = decade_ticks(lo_e, hi_e)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(FixedLocator([10.0**k for k in major]))
    target.set_major_formatter(matplotlib.ticker.FixedFormatter([f"$10^{{{k}}}$" for k in major]))
    target.set_minor_locator(FixedLocator([10.0**k for k in range(lo_e, hi_e + 1) if k not in major]))
    target.set_minor_formatter(NullFormatter())


def _colors(n: int) -> list:
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * i / (n - 1)) for i in range(n)]


def _mark_unplottable(ax, x: np.ndarray, med: np.ndarray, n_bad: np.ndarray, color, first: bool) -> int:
    """Mark sites a log axis cannot show: non-finite seeds (x at the top), zero medians (v at the bottom)."""
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    bad = n_bad > 0
    zero = np.isfinite(med) & (med <= 0)
    if bad.any():
        ax.scatter(
            x[bad],
            np.full(bad.sum(), 0.97),
            transform=trans,
            marker="x",
            color=BAD_COLOR,
            s=30,
            zorder=5,
            clip_on=False,
            label="non-finite (nan/inf) in some seed" if first else None,
        )
    if zero.any():
        ax.scatter(
            x[zero],
            np.full(zero.sum(), 0.03),
            transform=trans,
            marker="v",
            color=color,
            s=30,
            zorder=5,
            clip_on=False,
            label="exactly 0 (off the log scale)" if first else None,
        )
    return int(bad.sum() + zero.sum())


def _positive(values: np.ndarray) -> np.ndarray:
    """The values a log axis can draw; others become gaps (and get marked separately)."""
    v = np.asarray(values, dtype=float).copy()
    v[~(np.isfinite(v) & (v > 0))] = np.nan
    return v


def _caption(fig, text: str, width: int = 130) -> None:
    import textwrap

    fig.supxlabel(textwrap.fill(text, width), fontsize=7.5, color="0.35", x=0.01, ha="left")


# ---------------------------------------------------------------------------------------------
# Per-layer profile


def chain_reference(config: dict, last_value: float, depth: int):
    """The closed form of a constant-weight linear chain, anchored on the measured last layer.

    Identity activation, every weight w, no residual, no norm, width n, loss sum/mean: the Jacobian of
    each layer is w·11ᵀ, so the gradient reaching layer l is (|w|·n)^(L-1-l) times the last layer's
    (exactly; bias does not enter). Width 1, loss sum: w^(depth-l). Returns (label, function of
    layer) or None when the config is not such a chain.
    """
    m = config.get("model") or {}
    init = m.get("init") or {}
    if not (
        m.get("activation") == "identity"
        and init.get("scheme") == "constant"
        and not m.get("residual")
        and m.get("norm", "none") == "none"
        and config.get("loss", "sum") in ("sum", "mean")
        and m.get("block", "mlp") == "mlp"
    ):
        return None
    w, n = float(init.get("scale", 1.0)), int(m.get("width", 1))
    gain = abs(w) * n
    label = f"closed form {w:g}^(depth−l)" if n == 1 else f"closed form ({w:g}·{n})^(depth−1−l) × last layer"
    return label, lambda layer: last_value * gain ** (depth - 1 - np.asarray(layer, dtype=float))


def profile_figure(
    grads: pd.DataFrame,
    column: str = "input_grad_norm",
    labels: dict[str, str] | None = None,
    colors: dict[str, tuple] | None = None,
    title: str = "",
    subtitle: str = "",
    caption: str = "",
    config: dict | None = None,
    guides: bool = True,
    ylabel: str = "‖∂loss/∂$x_l$‖  (gradient reaching layer $l$)",
) -> Figure:
    """Layer on x, `column` on a log y: one line per variant (median over seeds, min–max band),
    transformer sublayers marked, the prediction dashed when the table has one, the closed form
    where one exists, dotted guides at the vanishing/exploding thresholds relative to the last layer."""
    stats = site_stats(grads, column)
    variants = list(stats["variant"].unique())
    labels = labels or {}
    palette = _colors(len(variants))
    colors = [(colors or {}).get(v, palette[i]) for i, v in enumerate(variants)]
    fig = new_figure()
    ax = fig.add_subplot()
    drawn = [stats["median"], stats["min"], stats["max"]]
    multi_seed = bool((stats["n"] > 1).any())
    many = len(variants) > 1
    guides = guides and len(variants) <= MAX_GUIDED  # beyond that, guides only clutter
    shade = []  # (factor, level): the zones a single line's flags mark
    guide_levels = []  # threshold levels: they widen the axis only when the data come within a decade of them
    n_marked = 0
    for i, (variant, color) in enumerate(zip(variants, colors)):
        s = stats[stats["variant"] == variant]
        x = s["x"].to_numpy()
        med = s["median"].to_numpy()
        last = med[end_sites(s["layer"])[1]]  # the last block's input (the guides' reference, as the flags')
        ratio = _first_last_ratio(grads[grads["variant"] == variant], column)
        label = labels.get(variant, variant)
        if len(variants) <= MAX_GUIDED and math.isfinite(ratio):
            label += f"  (first/last {ratio:.3g})"
        ax.plot(x, _positive(med), color=color, linewidth=1.8, label=label, gid=f"median:{variant}")
        if multi_seed:
            ax.fill_between(
                x,
                _positive(s["min"].to_numpy()),
                _positive(s["max"].to_numpy()),
                color=color,
                alpha=0.2,
                linewidth=0,
                gid=f"band:{variant}",
            )
        for sub, marker in SUBLAYER_MARKERS.items():
            on = (s["sublayer"] == sub).to_numpy()
            if marker and on.any() and s["sublayer"].nunique() > 1:
                ax.scatter(
                    x[on],
                    _positive(med[on]),
                    marker=marker,
                    s=14,
                    color=color,
                    zorder=4,
                    label=f"{sub} sublayer" if i == 0 else None,
                )
        n_marked += _mark_unplottable(ax, x, med, s["n_bad"].to_numpy(), color, first=n_marked == 0)
        ref = (
            chain_reference(config, last, int(s["layer"].max()) + 1)
            if (config and not many and math.isfinite(last) and last > 0)
            else None
        )
        pred_col = "predicted_" + column
        if ref is not None:  # an exact closed form (the chain) wins over the theory overlay
            ref_label, fn = ref
            ref_y = fn(s["layer"].to_numpy())
            ax.plot(x, ref_y, color="black", linestyle="--", linewidth=1.0, label=ref_label, gid="closed-form")
            drawn.append(ref_y)
        elif pred_col in grads.columns:
            pstats = site_stats(grads[grads["variant"] == variant].assign(**{column: grads[pred_col]}), column)
            if pstats["median"].notna().any():
                ax.plot(
                    pstats["x"],
                    _positive(pstats["median"].to_numpy()),
                    color=color,
                    linestyle="--",
                    linewidth=1.2,
                    label="predicted (theory)" if i == 0 else None,
                    gid=f"predicted:{variant}",
                )
                drawn.append(pstats["median"])
        if guides and math.isfinite(last) and last > 0:
            guide_levels += [
                (variant, color, factor, name, last * factor)
                for factor, name in ((VANISHING, "vanishing"), (EXPLODING, "exploding"))
            ]
    near = near_guides(drawn, [g[-1] for g in guide_levels])
    lo, hi = log_limits(*drawn, *near)
    set_log_axis(ax, lo, hi)
    for variant, color, factor, name, level in guide_levels:
        if [level] not in near:
            continue
        style = dict(GUIDE_STYLE, color=color if many else GUIDE_STYLE["color"])
        ax.axhline(level, gid=f"guide-{name}:{variant}", **style)
        if not many:
            shade.append((factor, level))
            ax.annotate(
                f"{name}: {factor:g} × last layer",
                xy=(1.0, level),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3 if factor > 1 else -10),
                textcoords="offset points",
                ha="right",
                fontsize=7.5,
                color="0.35",
            )
    for factor, level in shade:  # shade the flagged zones, within the fixed limits
        ax.axhspan(
            *((lo, level) if factor < 1 else (level, hi)),
            color="#f2c14e" if factor < 1 else BAD_COLOR,
            alpha=0.08,
            linewidth=0,
            zorder=0,
        )
    xmax = stats["x"].max() if len(stats) else 1
    ax.set_xlim(-0.5, xmax + 0.5)
    ax.set_xlabel("layer $l$  (0 = input side; the gradient flows right to left)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", axis="y", alpha=0.25)
    _titles(fig, ax, title, subtitle, beside=len(variants) > 2)
    band = " Line: median over seeds; band: min–max." if multi_seed else ""
    guide = (
        f" Dotted{' (in each line’s colour)' if many else ''}: the vanishing/exploding thresholds "
        f"(×{VANISHING:g}, ×{EXPLODING:g} of the last layer's gradient)."
        if guides
        else ""
    )
    if guides and len(near) < len(guide_levels):
        guide += " A threshold more than a decade beyond every value is left off the axis."
    _caption(fig, (caption + band + guide).strip())
    _legend(fig, ax, len(variants))
    return fig


def near_guides(drawn, levels, reach: float = 10.0) -> list[list[float]]:
    """The threshold levels within `reach` (a factor) of the drawn values' range: only these widen a
    log axis. A guide far beyond the data stretched the profile's axis to 1e-2 … 1e6 and squashed
    the data into two of its decades."""
    vals = np.concatenate([np.asarray(d, dtype=float).ravel() for d in drawn] or [np.array([])])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not vals.size:
        return [[g] for g in levels]
    return [[g] for g in levels if vals.min() / reach <= g <= vals.max() * reach]


def _legend(fig, ax, entries: int, inside: int = 2, wrap: int = 34) -> None:
    """Up to `inside` lines: a legend inside the axes where it covers least; more: beside the axes, on
    the right (labels wrapped), so a sweep's ten entries never cover the data."""
    if entries <= inside:
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
        return
    handles, labels = ax.get_legend_handles_labels()
    labels = [textwrap.fill(label, wrap, break_on_hyphens=False) for label in labels]
    fig.legend(handles, labels, fontsize=7, loc="outside right upper", frameon=False)


def _first_last_ratio(vgrads: pd.DataFrame, column: str) -> float:
    """Median over seeds of the first/last ratio (summary.csv's grad_ratio: `end_sites`), at the last step."""
    return finite_stats(seed_ratios(vgrads, column))[0]


def _panel_title(ax, variant: str, ncols: int) -> None:
    """A small panel's title, kept inside its panel: a sweep point `name[a=1,b=2]` is shown by its
    settings (the figure's title names the config), wrapped at the commas to the panel's width."""
    label = variant[variant.index("[") + 1 : -1].replace(",", ", ") if "[" in variant and variant.endswith("]") else variant
    chars = max(12, int(ax.figure.get_figwidth() / ncols * 13))  # ~13 characters an inch at 8 pt
    ax.set_title(textwrap.fill(label, width=chars), fontsize=8, loc="left")


TITLE_CHARS = 110  # a 10 pt title line across the 8-inch figure


def _suptitle(fig, title: str, chars: int = TITLE_CHARS) -> None:
    """The figure's title, wrapped to the figure's width (a 4-way compare's names were cut off)."""
    if title:
        fig.suptitle(textwrap.fill(title, chars, break_on_hyphens=False), fontsize=10, x=0.01, ha="left")


def _titles(fig, ax, title: str, subtitle: str, beside: bool = False) -> None:
    """`beside`: a legend sits to the right of the axes, up to the top: the title stops short of it."""
    _suptitle(fig, title, chars=70 if beside else TITLE_CHARS)
    if subtitle:
        ax.set_title(subtitle, fontsize=9, loc="left")


# ---------------------------------------------------------------------------------------------
# Parameter view


def params_figure(params: pd.DataFrame, title: str = "", caption: str = "", max_panels: int = 6) -> Figure:
    """Per-layer `grad_norm` of each named parameter (one line per name), one panel per variant,
    all panels on the same fixed log y-axis."""
    variants = list(params["variant"].unique())
    shown = variants
    if len(variants) > max_panels:
        idx = np.unique(np.linspace(0, len(variants) - 1, max_panels).round().astype(int))
        shown = [variants[i] for i in idx]
    ncols = min(len(shown), 3)
    nrows = math.ceil(len(shown) / ncols)
    fig = new_figure((FIGSIZE[0], FIGSIZE[1] if nrows == 1 else 3.0 * nrows + 0.8))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    names = list(params["param"].unique())
    # one hue per module (attn.q, ffn.out, linear, ...), solid for its weight, dashed for its bias
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
    hue = dict(zip(modules, _colors(len(modules))))
    colors = {n: hue[n.rsplit(".", 1)[0]] for n in names}
    dashes = {n: "--" if n.endswith("bias") else "-" for n in names}
    last = params[params["step"] == params["step"].max()] if "step" in params.columns else params
    drawn = []
    multi_seed = last["seed"].nunique() > 1
    for ax, variant in zip(axes, shown):
        vdf = last[last["variant"] == variant]
        for name in names:
            p = vdf[vdf["param"] == name]
            if p.empty:
                continue
            g = p.groupby("layer", sort=True)["grad_norm"]
            layers = np.array(list(g.groups.keys()), dtype=float)
            st = [(finite_stats(v.to_numpy(dtype=float))) for _, v in g]
            med = np.array([s[0] for s in st])
            single = len(layers) == 1  # a parameter at one layer only (a stem, a head, a final norm): a marker
            ax.plot(
                layers,
                _positive(med),
                color=colors[name],
                linestyle=dashes[name],
                linewidth=1.5,
                marker=("o" if name.endswith("weight") else "s") if single else None,
                markersize=5,
                fillstyle="full" if name.endswith("weight") else "none",
                label=name if ax is axes[0] else None,
                gid=f"median:{variant}:{name}",
            )
            if multi_seed:
                ax.fill_between(
                    layers,
                    _positive(np.array([s[1] for s in st])),
                    _positive(np.array([s[2] for s in st])),
                    color=colors[name],
                    alpha=0.18,
                    linewidth=0,
                )
            _mark_unplottable(ax, layers, med, np.array([s[3] for s in st]), colors[name], first=False)
            drawn += [med, [s[1] for s in st], [s[2] for s in st]]
        if len(shown) > 1:
            _panel_title(ax, variant, ncols)
        ax.set_xlabel("layer")
        ax.grid(True, which="major", axis="y", alpha=0.25)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    lo, hi = log_limits(*drawn)
    for ax in axes[: len(shown)]:
        set_log_axis(ax, lo, hi)
    axes[0].set_ylabel("‖∂loss/∂θ‖ per parameter")
    if len(names) > 6:
        fig.legend(fontsize=7, loc="outside right upper", frameon=False)
    else:
        axes[0].legend(fontsize=7, loc="best", framealpha=0.85)
    _suptitle(fig, title)
    more = f" {len(shown)} of {len(variants)} variants shown." if len(shown) < len(variants) else ""
    band = " Line: median over seeds; band: min–max." if multi_seed else ""
    _caption(fig, (caption + band + more).strip())
    return fig


def drawn_quantities(grads: pd.DataFrame) -> list:
    """The registry's per-site quantities `quantities_figure` draws: those `grads` holds with a finite
    value, other than the profile's own input_grad_norm (resflow.quantities, `figure`)."""
    return [
        q
        for name, q in quantities.GRADS.items()
        if q.figure and name != "input_grad_norm" and name in grads and np.isfinite(grads[name].to_numpy(dtype=float)).any()
    ]


def quantities_figure(grads: pd.DataFrame, title: str = "", caption: str = "") -> Figure:
    """One panel per measured quantity of the registry (`drawn_quantities`): layer on x, its median
    over seeds at the last recorded step it has a value at, one line per variant, on the quantity's scale."""
    shown = drawn_quantities(grads)
    ncols = min(len(shown), 2)
    nrows = math.ceil(len(shown) / ncols)
    fig = new_figure((FIGSIZE[0], FIGSIZE[1] if nrows == 1 else 3.0 * nrows + 0.8))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    variants = list(grads["variant"].unique())
    palette = _colors(len(variants))
    for ax, q in zip(axes, shown):
        finite = grads[np.isfinite(grads[q.name].to_numpy(dtype=float))]
        step = int(finite["step"].max()) if "step" in finite else None  # (no update follows a run's last step)
        stats = site_stats(grads, q.name, step)
        drawn = []
        for variant, color in zip(variants, palette):
            st = stats[stats["variant"] == variant]
            med = st["median"].to_numpy()
            ax.plot(st["x"], _positive(med) if q.scale == "log" else med, color=color, linewidth=1.5, label=str(variant))
            drawn.append(med)
        if q.scale == "log":
            lo, hi = log_limits(*drawn)
            set_log_axis(ax, lo, hi)
        if q.good is not None:
            for level in q.good:
                ax.axhline(level, **GUIDE_STYLE)
        unit = f" ({q.unit})" if q.unit else ""
        ax.set_title(f"{q.name}: {q.label}{unit}", fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(True, which="major", axis="y", alpha=0.25)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    if 1 < len(variants) <= MAX_GUIDED:
        axes[0].legend(fontsize=7, loc="best", framealpha=0.85)
    _suptitle(fig, title)
    _caption(
        fig, (caption + " Median over seeds at the last recorded step it has; dotted: a quantity's rule-of-thumb range.").strip()
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Sweeps: depth curve and heatmap


def _group_stats(summary: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    rows = []
    for key, g in summary.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        med, lo, hi, bad = finite_stats(g[column].to_numpy(dtype=float))
        rows.append(dict(zip(keys, key), median=med, min=lo, max=hi, n_bad=bad, n=len(g)))
    return pd.DataFrame(rows)


def _by_value(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """`df`'s rows in `resflow.results.values` order of column `key` (numbers, booleans, words)."""
    return df.iloc[sorted(range(len(df)), key=lambda i: sort_key(df[key].iloc[i]))]


def _ordered_groups(df: pd.DataFrame, keys: list[str]) -> list:
    """groupby(keys) as a list of (key tuple, rows), in `resflow.results.values` order of the keys."""
    groups = list(df.groupby(keys, sort=False, dropna=False))
    return sorted(groups, key=lambda kg: tuple(sort_key(v) for v in (kg[0] if isinstance(kg[0], tuple) else (kg[0],))))


def depth_figure(
    summary: pd.DataFrame, keys: list[str] | None = None, title: str = "", caption: str = "", x_key: str = "depth"
) -> Figure:
    """First/last-layer gradient ratio against depth (or another swept key, `x_key`), log y: one line
    per value of the other swept keys (median over seeds, min–max band), guides at the
    vanishing/exploding thresholds when the data come near them, the predicted ratio dashed when the
    summary has one. An `x_key` that is not all numbers (words, booleans, a number beside a word
    such as residual_scale 1 and deepnorm, an unset value) is placed at evenly spaced positions in
    `resflow.results.values` order, each labelled."""
    keys = swept_keys(summary) if keys is None else keys
    others = [k for k in keys if k != x_key]
    values = ordered(summary[x_key])
    numeric = all_numbers(values)
    slot = {sort_key(v): i for i, v in enumerate(values)}
    position = (
        (lambda col: np.array([as_number(v) for v in col], dtype=float))
        if numeric
        else (lambda col: np.array([slot[sort_key(v)] for v in col], dtype=float))
    )
    fig = new_figure()
    ax = fig.add_subplot()
    groups = [((), summary)] if not others else _ordered_groups(summary, others)
    colors = _colors(len(groups))
    drawn = [[1.0]]
    multi_seed = False
    for i, ((key, g), color) in enumerate(zip(groups, colors)):
        key = key if isinstance(key, tuple) else (key,)
        st = _by_value(_group_stats(g, [x_key], "grad_ratio"), x_key)
        multi_seed |= bool((st["n"] > 1).any())
        label = point_label(dict(zip(others, key)), others) if others else "measured"
        d = position(st[x_key])
        ax.plot(
            d,
            _positive(st["median"].to_numpy()),
            color=color,
            marker="o",
            markersize=4,
            linewidth=1.8,
            label=label,
            gid=f"median:{label}",
        )
        if (st["n"] > 1).any():
            ax.fill_between(
                d, _positive(st["min"].to_numpy()), _positive(st["max"].to_numpy()), color=color, alpha=0.2, linewidth=0
            )
        _mark_unplottable(ax, d, st["median"].to_numpy(), st["n_bad"].to_numpy(), color, first=i == 0)
        drawn += [st["median"], st["min"], st["max"]]
        if "predicted_grad_ratio" in g.columns and g["predicted_grad_ratio"].notna().any():
            pst = _by_value(_group_stats(g, [x_key], "predicted_grad_ratio"), x_key)
            ax.plot(
                position(pst[x_key]),
                _positive(pst["median"].to_numpy()),
                color=color,
                linestyle="--",
                linewidth=1.2,
                label="predicted (theory)" if i == 0 else None,
                gid=f"predicted:{label}",
            )
            drawn.append(pst["median"])
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    near = [g[0] for g in near_guides(drawn, [VANISHING, EXPLODING])]
    for factor, name in ((VANISHING, "vanishing"), (EXPLODING, "exploding")):
        if factor not in near:
            continue
        drawn.append([factor / 10 if factor < 1 else factor * 10])  # room for the guide's label
        ax.axhline(factor, gid=f"guide-{name}", **GUIDE_STYLE)
        ax.annotate(
            f"{name}: ratio {'<' if factor < 1 else '>'} {factor:g}",
            xy=(1.0, factor),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3 if factor > 1 else -10),
            textcoords="offset points",
            ha="right",
            fontsize=7.5,
            color="0.35",
        )
    set_log_axis(ax, *log_limits(*drawn))
    if not numeric:
        ax.set_xticks(range(len(values)), [_show(v) for v in values])
    ax.set_xlabel("depth (number of blocks)" if x_key == "depth" else x_key)
    ax.set_ylabel("gradient at first layer / at last layer")
    ax.grid(True, which="major", axis="y", alpha=0.25)
    _titles(
        fig,
        ax,
        title,
        "How much of the last layer's gradient reaches the first layer, by " + ("depth" if x_key == "depth" else x_key),
        beside=len(groups) > 4,
    )
    band = " Line: median over seeds; band: min–max." if multi_seed else ""
    shape = " A straight falling line = exponential decay with depth; flat = depth-independent." if x_key == "depth" else ""
    _caption(fig, (caption + band + shape).strip())
    _legend(fig, ax, len(groups), inside=4)
    return fig


def heatmap_figure(summary: pd.DataFrame, x_key: str, y_key: str, title: str = "", caption: str = "") -> Figure:
    """log10 of the first/last gradient ratio (median over seeds) over a two-key grid: diverging
    colormap centred on 0 (= no loss, no gain), colorbar in decades, each cell labelled."""
    st = _group_stats(summary, [y_key, x_key], "log10_grad_ratio")
    xs, ys = ordered(st[x_key]), ordered(st[y_key])  # numbers, booleans, words (resflow.results.values)
    col_of = {sort_key(v): j for j, v in enumerate(xs)}
    row_of = {sort_key(v): i for i, v in enumerate(ys)}
    grid = np.full((len(ys), len(xs)), np.nan)
    bad = np.zeros_like(grid, dtype=bool)
    for r in st.itertuples(index=False):
        rd = r._asdict()
        i, j = row_of[sort_key(rd[y_key])], col_of[sort_key(rd[x_key])]
        grid[i, j] = rd["median"]
        bad[i, j] = rd["n_bad"] == rd["n"]
    fig = new_figure()
    ax = fig.add_subplot()
    finite = grid[np.isfinite(grid)]
    span = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    span = math.ceil(span)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    mesh = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        norm=TwoSlopeNorm(0.0, -span, span),
        aspect="auto",
        origin="lower",
        interpolation="nearest",
    )
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i, j]
            text = f"{v:+.1f}" if math.isfinite(v) else "n/a"
            dark = math.isfinite(v) and abs(v) > 0.6 * span
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(xs)), [_show(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_show(v) for v in ys])
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    bar = fig.colorbar(mesh, ax=ax)
    ticks = decade_ticks(-span, span, max_labels=10)
    bar.set_ticks(ticks, labels=[f"$10^{{{k}}}$" for k in ticks])
    bar.set_label("gradient at first layer / at last layer")
    _titles(fig, ax, title, "log10 of the first/last-layer gradient ratio (0 = no loss; blue: vanishing, red: exploding)")
    _caption(fig, (caption + " Cells: median over seeds of log10(first/last); grey 'n/a': no finite value.").strip())
    return fig


# ---------------------------------------------------------------------------------------------
# Training: loss curves and the layer x step heatmap


def loss_figure(train: pd.DataFrame, title: str = "", caption: str = "") -> Figure:
    """Training loss against step, one line per variant (median over seeds, min–max band), eval loss
    dashed with markers where recorded, the task's floor dotted (when positive); log y when every value
    is positive and they span more than a decade, else linear (a loss going from 2.8 to 1.6 would be a
    sliver of a two-decade log axis)."""
    fig = new_figure()
    ax = fig.add_subplot()
    variants = list(train["variant"].unique())
    colors = _colors(len(variants))
    drawn = []
    multi_seed = train["seed"].nunique() > 1
    for i, (variant, color) in enumerate(zip(variants, colors)):
        v = train[train["variant"] == variant]
        for column, style in (
            ("loss", dict(linestyle="-", linewidth=1.6)),
            ("eval_loss", dict(linestyle="--", linewidth=1.2, marker="o", markersize=3)),
        ):
            if column not in v.columns or v[column].notna().sum() == 0:
                continue
            st = _group_stats(v[v[column].notna()], ["step"], column).sort_values("step")
            steps = st["step"].to_numpy(dtype=float)
            label = f"{variant}" if column == "loss" else f"{variant} (eval)"
            ax.plot(steps, st["median"].to_numpy(), color=color, label=label, gid=f"{column}:{variant}", **style)
            if multi_seed and column == "loss":
                ax.fill_between(steps, st["min"].to_numpy(), st["max"].to_numpy(), color=color, alpha=0.2, linewidth=0)
            _mark_unplottable(ax, steps, st["median"].to_numpy(), st["n_bad"].to_numpy(), color, first=i == 0)
            drawn += [st["median"], st["min"], st["max"]]
    if "task_floor" in train.columns:  # the lowest achievable loss, dotted (one line per distinct value)
        floors = train.groupby("variant", sort=False)["task_floor"].median().dropna()
        for k, floor in enumerate(sorted(set(floors.round(12)))):
            if floor > 0:  # a floor of 0 (teacher) has no place on a log axis
                ax.axhline(
                    floor,
                    color="0.35",
                    linestyle=":",
                    linewidth=1.1,
                    gid=f"floor:{floor!r}",
                    label="task floor (lowest achievable loss)" if k == 0 else None,
                )
                drawn.append(np.array([floor]))
    values = np.concatenate([np.asarray(d, dtype=float) for d in drawn]) if drawn else np.array([])
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all() and finite.max() > 10 * finite.min():
        set_log_axis(ax, *log_limits(finite))
        ax.set_ylabel("loss (log scale)")
    else:
        ax.set_ylabel("loss")
    ax.set_xlabel("training step")
    ax.grid(True, which="major", axis="y", alpha=0.25)
    _titles(fig, ax, title, "Does it learn? Training loss by step", beside=len(variants) > 2)
    band = " Line: median over seeds; band: min–max." if multi_seed else ""
    _caption(fig, (caption + band).strip())
    _legend(fig, ax, len(variants))
    return fig


def steps_heatmap_figure(grads: pd.DataFrame, title: str = "", caption: str = "", max_panels: int = 4) -> Figure:
    """Layer (y) x recorded step (x), colour = log10 of the gradient reaching the layer (median over
    seeds); one panel per variant, one colour scale for all panels, colorbar in decades."""
    variants = list(grads["variant"].unique())[:max_panels]
    ncols = len(variants) if len(variants) <= 2 else 2  # 3-4 panels: two rows, so each is wide enough to read
    nrows = math.ceil(len(variants) / ncols)
    fig = new_figure((FIGSIZE[0], FIGSIZE[1] if nrows == 1 else 6.4))
    axes = fig.subplots(nrows, ncols, sharey=True, sharex=True, squeeze=False).ravel()
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    grids = []
    for variant in variants:
        v = grads[grads["variant"] == variant]
        steps = sorted(v["step"].unique())
        per_step = [site_stats(v, step=s) for s in steps]
        y = per_step[0]["x"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            grid = np.log10(np.column_stack([ps["median"].to_numpy() for ps in per_step]))
        grid[~np.isfinite(grid)] = np.nan
        grids.append((variant, np.asarray(steps, dtype=float), y, grid))
    finite = np.concatenate([g[np.isfinite(g)] for *_, g in grids]) if grids else np.array([])
    lo = math.floor(finite.min()) if finite.size else -1
    hi = math.ceil(finite.max()) if finite.size else 1
    hi = hi if hi > lo else lo + 1
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    mesh = None
    for k, (ax, (variant, steps, y, grid)) in enumerate(zip(axes, grids)):
        mesh = ax.pcolormesh(_edges(steps), _edges(y), np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi, shading="flat")
        if k + ncols >= len(variants):  # the lowest panel of its column
            ax.set_xlabel("training step")
            ax.xaxis.set_tick_params(labelbottom=True)
        if len(variants) > 1:
            _panel_title(ax, variant, ncols)
        layers = np.unique(np.floor(y))  # whole layers on the axis (sublayers sit at fractions)
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=min(8, len(layers))))
    for ax in axes[::ncols]:
        ax.set_ylabel("layer (0 = input side)")
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=list(axes[: len(variants)]))
        ticks = decade_ticks(lo, hi, max_labels=10)
        bar.set_ticks(ticks, labels=[f"$10^{{{k}}}$" for k in ticks])
        bar.set_label("‖∂loss/∂$x_l$‖ (median over seeds)")
    _suptitle(fig, title)
    _caption(fig, (caption + " Each cell: log10 of the gradient reaching layer l at a recorded step; grey: not finite.").strip())
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; the outer cells as wide as their neighbours)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


# ---------------------------------------------------------------------------------------------
# Titles from a results dir, and the figures a results dir calls for


def describe(result) -> tuple[str, str]:
    """(title, caption) that say what was run: name, model, dtype, seeds."""
    grads, config, meta = result.grads, result.config or {}, result.meta or {}
    variants = list(grads["variant"].unique())
    name = config.get("name") if isinstance(config.get("name"), str) else None
    name = name or (variants[0] if len(variants) == 1 else " vs ".join(map(str, variants[:4])))
    cols = {c: grads[c].dropna().unique() for c in CONFIG_COLUMNS if c in grads.columns}  # (empty: any model's)

    def one(c, fmt):
        vals = cols.get(c)
        if vals is None or len(vals) == 0:
            return None
        if len(vals) > 1:
            return f"{c} varied"
        return fmt(vals[0])

    parts = [
        one("depth", lambda v: f"{v} ×")
        and " ".join(
            filter(
                None,
                [
                    one("depth", lambda v: f"{v} ×").replace(" varied", " varied,"),
                    one("block", str),
                    one("width", lambda v: f"width {v}"),
                ],
            )
        ).replace(" × conv", "-layer conv"),  # a conv ResNet's depth counts its layers (6n + 2), not blocks
        one("activation", str),
        one(
            "residual",
            lambda v: (
                _residual_text(cols["residual_scale"][0])
                if _truthy(v) and len(cols.get("residual_scale", [1])) == 1
                else ("residual" if _truthy(v) else "no residual")
            ),
        ),
        one(
            "norm",
            lambda v: (
                "no norm" if v == "none" else f"{v}-{cols['norm_type'][0] if len(cols.get('norm_type', [])) == 1 else 'norm'}"
            ),
        ),
        one(
            "init_scheme",
            lambda v: (
                f"init {v}×{float(cols['init_scale'][0]):g}"
                if len(cols.get("init_scale", [])) == 1
                else f"init {v}, scale varied"
            ),
        ),
    ]
    title = f"{name}: " + ", ".join(p for p in parts if p)
    seeds = sorted(pd.unique(grads["seed"]))
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}…{seeds[-1]} ({len(seeds)})"
    dtypes = {meta.get("dtype") or config.get("dtype")} - {None}
    if not dtypes and isinstance(config.get("compare"), dict):  # a compare: one config per variant
        dtypes = {c.get("dtype") for c in config["compare"].values() if isinstance(c, dict)} - {None}
    dtype = "/".join(sorted(dtypes)) or "dtype unknown"
    step = f", step {int(grads['step'].max())}" if "step" in grads.columns and grads["step"].max() > 0 else ""
    caption = f"{dtype}, {seed_text}{step}, resflow {meta.get('resflow', '')}".rstrip(", ") + "."
    return title, caption


def _truthy(v) -> bool:
    return str(v).lower() in ("true", "1")


def _residual_text(scale) -> str:
    """'residual α=0.5', or the scheme's name for a word (DeepNorm: 'residual deepnorm')."""
    return f"residual α={_show(scale)}" if as_number(scale) is not None else f"residual {_show(scale)}"


def variant_styles(summary: pd.DataFrame, variants: list[str], keys: list[str]) -> tuple[dict, dict]:
    """Legend labels and colours per variant. A sweep's point is labelled by its swept values; with
    depth and other keys swept, the other keys pick the hue and depth the shade (light = shallow)."""
    if not keys or len(variants) < 2:
        return {}, {}
    first = summary.drop_duplicates("variant").set_index("variant")
    labels = {}
    for v in variants:
        if v not in first.index:
            continue
        keyed = point_label(first.loc[v], keys)
        labels[v] = keyed if "[" in str(v) else f"{v} ({keyed})"
    colors = {}
    others = [k for k in keys if k != "depth"]
    if "depth" in keys and others and len(variants) > MAX_GUIDED:

        def combo(v):  # (sort keys: an unset value, NaN, is equal to itself there)
            return tuple(sort_key(first.loc[v, k]) for k in others)

        combos = list(dict.fromkeys(combo(v) for v in variants if v in first.index))
        depths = sorted(first["depth"].unique())
        base = dict(zip(combos, _colors(len(combos))))
        for v in variants:
            if v in first.index:
                rgb = np.array(base[combo(v)][:3])
                # shallow = light, deep = dark: from 45% of the hue (over white) to the hue darkened by 30%
                t = depths.index(first.loc[v, "depth"]) / max(1, len(depths) - 1)
                colors[v] = tuple(
                    rgb * (0.45 + 0.55 * t * 2) + (1 - (0.45 + 0.55 * t * 2)) if t <= 0.5 else rgb * (1 - 0.3 * (2 * t - 1))
                )
    return labels, colors


def figure_builders(result) -> dict[str, Callable[[], Figure]]:
    """The figures a results dir calls for, each as a function that draws it: the profile and the
    parameter view always; the loss and step heatmap when trained; the depth curve when depth varies,
    the ratio line when one other key does (sweeps), the heatmap when exactly two keys vary. Drawn one
    at a time, so one figure that fails costs only itself (`write_figures`)."""
    from resflow.report.terminal.run import headline

    meta = result.meta or {}
    kind = meta.get("kind")
    keys = swept_keys(result.summary)
    if kind == "sweep" and meta.get("axes"):  # the sweep says what it swept; a pinned (one-value) axis does not vary
        columns = [
            a["column"]
            for a in meta["axes"]
            if a.get("column") in result.summary.columns and result.summary[a["column"]].nunique(dropna=False) > 1
        ]
        keys = sorted(depth_axis(result.summary, columns), key=lambda k: k != "depth")  # n_layer: depth
    variants = list(result.grads["variant"].unique())
    single = len(variants) == 1
    texts: list[tuple[str, str]] = []

    def titled():  # (title, caption), worked out once, when the first figure is drawn
        if not texts:
            texts.append(describe(result))
        return dict(zip(("title", "caption"), texts[0]))

    def profile():
        labels, colors = variant_styles(result.summary, variants, keys)
        subtitle = headline(result.grads) if single else "Gradient reaching each layer, per variant"
        config = result.config if single else None
        return profile_figure(result.grads, labels=labels, colors=colors, config=config, subtitle=subtitle, **titled())

    out: dict[str, Callable[[], Figure]] = {"profile": profile}
    if result.params is not None and len(result.params):
        out["params"] = lambda: params_figure(result.params, **titled())
    train = getattr(result, "train", None)
    if train is not None and len(train):
        out["loss"] = lambda: loss_figure(train, **titled())
    if "step" in result.grads.columns and result.grads["step"].nunique() > 1:
        out["steps"] = lambda: steps_heatmap_figure(result.grads, **titled())
    if kind == "compare":  # configs side by side: the profile and parameters say it all
        return out
    if "depth" in keys and result.summary["depth"].nunique() > 1:
        out["depth"] = lambda: depth_figure(result.summary, keys, **titled())
    elif len(keys) == 1 and kind == "sweep":  # one key varies (not depth): the ratio against it, a line
        out["ratio"] = lambda: depth_figure(result.summary, keys, x_key=keys[0], **titled())
    if len(keys) == 2:
        x_key, y_key = keys  # depth (when swept) goes on x
        out["heatmap"] = lambda: heatmap_figure(result.summary, x_key, y_key, **titled())
    return out


def figures(result) -> dict[str, Figure]:
    """Every figure `figure_builders(result)` calls for, drawn."""
    return {name: build() for name, build in figure_builders(result).items()}


def save_figure(fig: Figure, path: Path) -> None:
    """Save atomically (temp file + rename): a reader never sees half a PNG."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    with atomic_file(path, suffix=f".tmp.{fmt}") as fh:  # written through its descriptor, never a link
        fig.savefig(fh, format=fmt, dpi=DPI)


def write_figures(result, directory: Path, fmt: str = "png") -> list[Path]:
    """Draw and save every figure `figure_builders(result)` calls for into `directory`; returns the
    paths. A figure that fails to draw is skipped and the others are drawn; then a `FigureError` names
    the ones that failed (a full disk or a permission is the environment's: raised as it comes)."""
    paths: list[Path] = []
    failed: list[tuple[str, BaseException]] = []
    try:
        builders = figure_builders(result)
    except Exception as err:  # noqa: BLE001 - which figures to draw could not be worked out: none is drawn
        raise FigureError([("figures", err)], Path(directory)) from err
    for name, build in builders.items():
        path = Path(directory) / f"{name}.{fmt}"
        try:
            save_figure(build(), path)
        except OSError:  # writing, not drawing: a full disk, a permission (the caller names the path)
            raise
        except Exception as err:  # noqa: BLE001 - one figure's bug costs that figure, not the others
            failed.append((path.name, err))
            continue
        paths.append(path)
    if failed:
        raise FigureError(failed, Path(directory), drawn=paths)
    return paths
