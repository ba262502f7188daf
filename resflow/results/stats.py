"""Summaries and flags computed from the tidy grads table (pandas only: no torch here).

Direction convention: the gradient travels backwards, from the last layer to the first.
    grad_ratio      = input_grad_norm(first block's input) / input_grad_norm(last block's input):
                      the first site of layer 0 over the first site of the last layer (`end_sites`;
                      a transformer's `attn` rows at both ends, one block apart per layer)
    gain_per_layer  = the per-layer factor the gradient is multiplied by on its way back, fitted:
                      exp(-slope) of ln(input_grad_norm) against layer; < 1 vanishes, > 1 explodes,
                      so grad_ratio ~ gain_per_layer ** (depth - 1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from resflow import quantities

VANISHING = 1e-3  # a layer whose gradient is < 1/1000 of the last layer's is flagged "vanishing"
EXPLODING = 1e3  # ... > 1000x the last layer's is flagged "exploding"


def flag(ratio: float) -> str:
    """The flag for a gradient ratio (a layer's gradient over the last layer's): +inf (a gradient
    where the last layer has exactly none) explodes; NaN (from a non-finite gradient) is non-finite.
    A ratio of two zero gradients is the caller's: "no gradient", not a flag of the ratio."""
    if ratio is None or math.isnan(ratio):
        return "non-finite"
    if ratio < VANISHING:
        return "vanishing"
    if ratio > EXPLODING:
        return "exploding"
    return ""


def end_sites(layers) -> tuple[int, int]:
    """The two sites a first/last ratio compares, as positions in one seed's rows (site order): the
    first block's input (the first row) and the last block's input (the last layer's first row).

    With one site per layer (mlp, conv, any model's blocks) these are the first and last rows; a
    transformer block has two (attn, then ffn), and both ends are its `attn` row, the block's input,
    so the ratio spans whole blocks (depth − 1 of them). The one definition: the summary, the
    tables' headline and flags, the figures and the training view all ask here."""
    layers = np.asarray(layers)
    if not len(layers):
        raise ValueError("no sites: a first/last ratio needs at least one")
    return 0, int(np.flatnonzero(layers == layers[-1])[0])


def ratio_of(first: float, last: float) -> float:
    """first / last, with a zero last: inf over a non-zero first, NaN over a zero one (no gradient)."""
    if last == 0:
        return float("nan") if first == 0 else float("inf")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(np.float64(first) / np.float64(last))


def seed_ratios(grads: pd.DataFrame, column: str = "input_grad_norm") -> np.ndarray:
    """Each seed's first/last ratio of `column` (`end_sites`), at the last recorded step."""
    if "step" in grads.columns and len(grads):
        grads = grads[grads["step"] == grads["step"].max()]
    out = []
    for _, g in grads.groupby("seed", sort=False):
        i, j = end_sites(g["layer"].to_numpy())
        v = g[column].to_numpy(dtype=float)
        out.append(ratio_of(v[i], v[j]))
    return np.asarray(out, dtype=float)


def fitted_gain(position: np.ndarray, values: np.ndarray) -> float:
    """exp(-slope) of the least-squares line through ln(values) against position (finite, > 0 only)."""
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2 or np.ptp(position[ok]) == 0:
        return float("nan")
    slope = np.polyfit(position[ok], np.log(values[ok]), 1)[0]
    return float(np.exp(-slope))


def site_position(group: pd.DataFrame) -> np.ndarray:
    """Fractional layer of each site: layer + k/n for the k-th of n sublayers (attn 0, ffn 0.5)."""
    n_sub = group.groupby("layer", sort=False)["sublayer"].transform("size").to_numpy()
    k = group.groupby("layer", sort=False).cumcount().to_numpy()
    return group["layer"].to_numpy() + k / n_sub


def finite_stats(values) -> tuple[float, float, float, int]:
    """Median, min and max over the seeds' finite values, and how many were not finite (nan, ±inf).

    The one seed statistic: tables, figures and sweeps all call it, so they cannot disagree.
    """
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return math.nan, math.nan, math.nan, int(values.size)
    v = values[ok]
    return float(np.median(v)), float(v.min()), float(v.max()), int((~ok).sum())


SITE_STATS_COLUMNS = ["variant", "x", "layer", "sublayer", "median", "min", "max", "n_bad", "n"]


def site_stats(grads: pd.DataFrame, column: str = "input_grad_norm", step: int | None = None) -> pd.DataFrame:
    """Per (variant, site), in site order: x (fractional layer), `finite_stats` of `column` over the
    seeds, and n (seeds). At the last recorded step unless `step` is given."""
    if "step" in grads.columns:
        step = grads["step"].max() if step is None else step
        grads = grads[grads["step"] == step]
    if "variant" not in grads.columns:
        grads = grads.assign(variant="")
    rows = []
    for variant, vdf in grads.groupby("variant", sort=False):
        first_seed = vdf[vdf["seed"] == vdf["seed"].iloc[0]] if "seed" in vdf else vdf
        x = site_position(first_seed)
        by_site = {k: g[column].to_numpy(dtype=float) for k, g in vdf.groupby(["layer", "sublayer"], sort=False)}
        for i, (layer, sub) in enumerate(first_seed[["layer", "sublayer"]].itertuples(index=False)):
            values = by_site[(layer, sub)]
            med, lo, hi, bad = finite_stats(values)
            rows.append(
                dict(
                    variant=variant,
                    x=float(x[i]),
                    layer=int(layer),
                    sublayer=sub,
                    median=med,
                    min=lo,
                    max=hi,
                    n_bad=bad,
                    n=len(values),
                )
            )
    return pd.DataFrame(rows, columns=SITE_STATS_COLUMNS)


def profile_medians(grads: pd.DataFrame, column: str = "input_grad_norm") -> dict:
    """variant -> the median over seeds of `column` at each of its sites, in site order, at its own
    last recorded step: `site_stats`' median column, for every variant at once (vectorised: one
    groupby, not a pass per variant; a sweep's profiles over thousands of points)."""
    if not len(grads):
        return {}
    if "variant" not in grads.columns:
        grads = grads.assign(variant="")
    if "step" in grads.columns:
        last = grads.groupby("variant", sort=False)["step"].transform("max")
        grads = grads[grads["step"].to_numpy() == last.to_numpy()]
    values = grads[column].to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)  # finite_stats: the finite values only
    keys = ["variant", "layer", "sublayer"]
    medians = pd.Series(values, index=grads.index).groupby([grads[k] for k in keys], sort=False, dropna=False).median()
    codes, uniques = pd.factorize(medians.index.get_level_values(0))
    order = np.argsort(codes, kind="stable")  # (each variant's sites together, in their order)
    cuts = np.flatnonzero(np.diff(codes[order])) + 1
    return dict(zip(uniques, np.split(medians.to_numpy(dtype=float)[order], cuts)))


def seed_spread(ratios) -> tuple[float, float, float]:
    """The spread over seeds of first/last ratios: (SD of log10 ratio, 25th and 75th percentile of the
    ratio). The SD of the log is the quantity finite-width theory speaks of (Hanin 2018: it grows with
    depth/width); NaN with fewer than two finite positive ratios (the quartiles: fewer than one)."""
    r = np.asarray(ratios, dtype=float)
    r = r[np.isfinite(r) & (r > 0)]
    sd = float(np.std(np.log10(r), ddof=1)) if len(r) >= 2 else math.nan
    q25, q75 = (float(np.percentile(r, 25)), float(np.percentile(r, 75))) if len(r) else (math.nan, math.nan)
    return sd, q25, q75


SPREAD_COLUMNS = ["log10_ratio_sd", "ratio_q25", "ratio_q75"]


def summarize(grads: pd.DataFrame, config_columns: list[str]) -> pd.DataFrame:
    """One row per (variant, seed, step): first/last gradient (`end_sites`), their ratio, fitted gain, finiteness;
    and the spread of the ratio over the seeds of the same (variant, step), on each of its rows
    (`seed_spread`: log10_ratio_sd, ratio_q25, ratio_q75).

    Groups as `grads.groupby([variant, seed, step], sort=False)` would (first appearance, rows in
    their order, missing keys dropped), but over numpy arrays: the per-group pandas calls cost a
    sweep's workers more than the rest of a point's bookkeeping (issue 29). The fitted gain is still
    one `fitted_gain` per group, on the same arrays, so every value is the same to the bit."""
    keys = ["variant", "seed", "step"]
    gid, n_groups = group_ids(grads, keys)
    if not n_groups:
        return pd.DataFrame([])
    order = np.argsort(gid, kind="stable")
    order = order[gid[order] >= 0]  # (rows with a missing key belong to no group)
    bounds = np.searchsorted(gid[order], np.arange(n_groups + 1))
    firsts = order[bounds[:-1]]  # each group's first row
    layer = grads["layer"].to_numpy()
    g_all = grads["input_grad_norm"].to_numpy(dtype=float)
    position = _site_positions(gid, layer)
    checked = [c for c in quantities.finite_checked() if c in grads.columns]  # (the registry's `finite` flag)
    row_finite = np.isfinite(grads[checked].to_numpy(dtype=float)).all(axis=1)
    first, last, gain = np.empty(n_groups), np.empty(n_groups), np.empty(n_groups)
    finite = np.empty(n_groups, dtype=bool)
    for k in range(n_groups):
        rows = order[bounds[k] : bounds[k + 1]]
        g = g_all[rows]
        i, j = end_sites(layer[rows])
        first[k], last[k] = g[i], g[j]
        gain[k] = fitted_gain(position[rows], g)
        finite[k] = bool(row_finite[rows].all())
    ratio = [ratio_of(a, b) for a, b in zip(first.tolist(), last.tolist())]
    picked = grads.iloc[firsts]  # (values as Python scalars, so the frame's dtypes are inferred as before)
    data: dict[str, list] = {k: picked[k].tolist() for k in keys}
    data.update(
        grad_first=first.tolist(),
        grad_last=last.tolist(),
        grad_ratio=ratio,
        log10_grad_ratio=[math.log10(r) if r > 0 and math.isfinite(r) else float("nan") for r in ratio],
        gain_per_layer=gain.tolist(),
        finite=finite.tolist(),
    )
    data.update({c: picked[c].tolist() for c in config_columns})
    out = pd.DataFrame(data)
    spread_id, n_spread = group_ids(out, ["variant", "step"])
    ratios = np.asarray(ratio, dtype=float)
    spread = np.full((len(out), len(SPREAD_COLUMNS)), np.nan)
    for k in range(n_spread):
        at = spread_id == k
        spread[at] = seed_spread(ratios[at])
    for i, col in enumerate(SPREAD_COLUMNS):
        out[col] = spread[:, i]
    return out


def group_ids(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, int]:
    """Each row's group under `df.groupby(keys, sort=False)` (numbered in order of first appearance;
    -1: a key is missing, the row is in no group), and the number of groups."""
    combined = np.zeros(len(df), dtype=np.int64)
    missing = np.zeros(len(df), dtype=bool)
    for key in keys:
        codes, uniques = pd.factorize(df[key], use_na_sentinel=True)
        missing |= codes < 0
        combined = combined * (len(uniques) + 1) + codes  # (the product of the keys' counts: a point's few)
    present, uniques = pd.factorize(combined[~missing])
    ids = np.full(len(df), -1, dtype=np.int64)
    ids[~missing] = present
    return ids, len(uniques)


def _site_positions(gid: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """`site_position` of every group's rows at once: layer + k/n for the k-th of a layer's n rows in its group."""
    codes, uniques = pd.factorize(layer)
    pair = gid * (len(uniques) + 1) + codes
    pid, _ = pd.factorize(pair)
    n_sub = np.bincount(pid)[pid]
    order = np.argsort(pid, kind="stable")
    starts = np.searchsorted(pid[order], pid[order])
    k = np.empty(len(pid), dtype=np.int64)
    k[order] = np.arange(len(pid)) - starts
    return layer + k / n_sub


def without_input_gradient(grads: pd.DataFrame) -> list[int]:
    """The leading layers of an any-model result (`resflow.record`/`watch`: grads has a `module`
    column) whose input received no gradient in any row: the blocks fed by the data directly, whose
    input needs none (the recorder reads NaN there). Empty when a later layer has none either, and for
    resflow's own models, whose inputs always need a gradient (a NaN there is non-finite)."""
    if "module" not in grads.columns or not len(grads):
        return []
    missing = grads.groupby("layer", sort=True)["input_grad_norm"].apply(lambda s: bool(s.isna().all()))
    leading = []
    for layer, none in missing.items():
        if not none:
            return leading
        leading.append(int(layer))
    return []  # no layer has a gradient: nothing to measure from, not "fed by the data"


def ratio_from(grads: pd.DataFrame, layer: int) -> float:
    """Median over seeds (at the last step) of input_grad_norm at `layer` over that at the last layer."""
    df = grads[grads["step"] == grads["step"].max()] if "step" in grads.columns else grads
    ratios = []
    for _, g in df.groupby(["variant", "seed"] if "variant" in df.columns else ["seed"], sort=False):
        g = g.sort_values("layer", kind="stable")
        at, last = g.loc[g["layer"] == layer, "input_grad_norm"], float(g["input_grad_norm"].iloc[-1])
        if len(at):
            ratios.append(float(at.iloc[0]) / last if last != 0 else math.nan)
    med, *_ = finite_stats(ratios)
    return med
