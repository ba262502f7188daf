"""Summaries and flags computed from the tidy grads table (pandas only: no torch here).

Direction convention: the gradient travels backwards, from the last layer to the first.
    grad_ratio      = input_grad_norm(first site) / input_grad_norm(last site)
    gain_per_layer  = the per-layer factor the gradient is multiplied by on its way back, fitted:
                      exp(-slope) of ln(input_grad_norm) against layer; < 1 vanishes, > 1 explodes,
                      so grad_ratio ~ gain_per_layer ** (depth - 1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

VANISHING = 1e-3  # a layer whose gradient is < 1/1000 of the last layer's is flagged "vanishing"
EXPLODING = 1e3  # ... > 1000x the last layer's is flagged "exploding"


def flag(ratio: float) -> str:
    """The flag for a gradient ratio (a layer's gradient over the last layer's)."""
    if ratio is None or not math.isfinite(ratio):
        return "non-finite"
    if ratio < VANISHING:
        return "vanishing"
    if ratio > EXPLODING:
        return "exploding"
    return ""


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


def summarize(grads: pd.DataFrame, config_columns: list[str]) -> pd.DataFrame:
    """One row per (variant, seed, step): first/last gradient, their ratio, fitted gain, finiteness."""
    rows = []
    keys = ["variant", "seed", "step"]
    for key, group in grads.groupby(keys, sort=False):
        g = group["input_grad_norm"].to_numpy(dtype=float)
        first, last = float(g[0]), float(g[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = first / last if last != 0 else (float("nan") if first == 0 else float("inf"))
            log10 = math.log10(ratio) if ratio > 0 and math.isfinite(ratio) else float("nan")
        finite = bool(np.isfinite(group[["input_grad_norm", "activation_rms", "param_grad_norm"]].to_numpy(dtype=float)).all())
        row = dict(zip(keys, key))
        row.update(
            grad_first=first,
            grad_last=last,
            grad_ratio=ratio,
            log10_grad_ratio=log10,
            gain_per_layer=fitted_gain(site_position(group), g),
            finite=finite,
        )
        row.update({c: group[c].iloc[0] for c in config_columns})
        rows.append(row)
    return pd.DataFrame(rows)
