"""Put the theory's prediction beside the measurement: adds predicted columns to the tidy tables.

The one place where `resflow.theory.predict` (pure numbers) meets the results schema (pandas):
    grads.csv    predicted_input_grad_norm  the predicted per-site profile, scaled to the measured
                                            last site of the same (variant, seed, step)
    summary.csv  predicted_grad_ratio, predicted_gain_per_layer, chi1, depth_scale
Columns are empty (NaN) where the config is outside every theory's domain.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd

from resflow.results.stats import group_ids
from resflow.results.tables import GRADS_APPENDED, appended_last
from resflow.theory.predict import NoPrediction, Prediction

GRADS_COLUMNS = ["predicted_input_grad_norm"]
SUMMARY_COLUMNS = ["predicted_grad_ratio", "predicted_gain_per_layer", "chi1", "depth_scale"]


def _num(value) -> float:
    return math.nan if value is None else float(value)


def add_prediction(grads: pd.DataFrame, summary: pd.DataFrame, pred: Prediction | NoPrediction):
    """Copies of `grads` and `summary` with the predicted columns (NaN when `pred` is a NoPrediction)."""
    # shallow copies (copy-on-write: the caller's frames are not changed), the predicted grads column
    # put before the registry's appended ones, where `appended_last` would move it (no column reorder)
    grads, summary = grads.copy(deep=False), summary.copy(deep=False)
    at = next((i for i, c in enumerate(grads.columns) if c in GRADS_APPENDED), len(grads.columns))
    if not pred:
        grads.insert(at, "predicted_input_grad_norm", math.nan)
        return appended_last(grads), summary.assign(**dict.fromkeys(SUMMARY_COLUMNS, math.nan))
    grads.insert(at, "predicted_input_grad_norm", _scaled_profile(grads, pred.ratios))
    at_init = summary["step"] == 0 if "step" in summary else True
    values = (pred.grad_ratio, pred.gain_per_layer, _num(pred.chi1), _num(pred.depth_scale))
    summary = summary.assign(**{col: np.where(at_init, value, math.nan) for col, value in zip(SUMMARY_COLUMNS, values)})
    return appended_last(grads), summary


def _scaled_profile(grads: pd.DataFrame, ratios: np.ndarray) -> np.ndarray:
    """Per grads row: `ratios` (one per site, first to last) times the measured last site's
    input_grad_norm of its (variant, seed, step) group, at step 0 where the group has one row per
    ratio; NaN elsewhere. Vectorised over groups (a sweep makes one group per seed of every point)."""
    predicted = np.full(len(grads), math.nan)
    ids, _ = group_ids(grads, ["variant", "seed", "step"])  # -1: a key is missing
    if not len(ids):
        return predicted
    order = np.argsort(ids, kind="stable")  # each group's rows together, in row order
    starts = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])
    counts = np.diff(np.r_[starts, len(ids)])
    pos, size, last = (np.empty(len(ids), dtype=np.int64) for _ in range(3))
    pos[order] = np.arange(len(ids)) - np.repeat(starts, counts)
    size[order] = np.repeat(counts, counts)
    last[order] = np.repeat(order[starts + counts - 1], counts)
    # the theory is about the network at initialisation, not after training steps; and a group that
    # is not one site per block does not line up with the prediction
    ok = (ids >= 0) & (grads["step"].to_numpy() == 0) & (size == len(ratios))
    measured = grads["input_grad_norm"].to_numpy(dtype=float)
    predicted[ok] = measured[last[ok]] * ratios[pos[ok]]
    return predicted


def overlay(pred: Prediction | NoPrediction):
    """`add_prediction` of `pred` as a function of (grads, summary): the theory step of the one
    assembly path (resflow.results.assemble), which cannot import theory itself."""
    return partial(add_prediction, pred=pred)


def log_ratio_gap(measured: float, predicted: float) -> float:
    """ln(measured / predicted) of a first/last ratio: 0 when the theory is exact, the same scale at
    the critical point (predicted ≈ 1) as anywhere else, unlike a relative error of the log ratio.
    NaN where undefined (non-positive or non-finite ratios)."""
    if not (measured > 0 and predicted > 0 and math.isfinite(measured) and math.isfinite(predicted)):
        return math.nan
    return math.log(measured) - math.log(predicted)


def gap_text(gap: float, layers: int | None = None) -> str:
    """'measured/predicted 1.32 (ln +0.28, +0.0057 per layer)'; `layers`: the sites between first and last."""
    if not math.isfinite(gap):
        return "no error defined (non-finite or zero gradient)"
    per = f", {gap / layers:+.2g} per layer" if layers else ""
    return f"measured/predicted {math.exp(gap):.3g} (ln {gap:+.2g}{per})"


def comparison_line(summary: pd.DataFrame, verdict: str) -> str:
    """One sentence: predicted vs measured first/last ratio (median over seeds), or why there is none.

    `verdict` is the prediction's model description, or "no prediction: …" (meta.json's `theory`).
    """
    if "predicted_grad_ratio" not in summary or summary["predicted_grad_ratio"].isna().all():
        return f"theory: {verdict}" if verdict.startswith("no prediction") else "theory: no prediction"
    predicted = float(summary["predicted_grad_ratio"].iloc[0])
    ends = [summary[c].to_numpy(dtype=float) for c in ("grad_first", "grad_last") if c in summary]
    if len(ends) == 2 and len(ends[0]) and all((e == 0).all() for e in ends):  # zero is finite: no ratio, not "nan"
        return (
            f"theory ({verdict}): first/last predicted {predicted:.3g}, measured: no gradient "
            "(exactly 0 at the first and last layers, so no ratio)"
        )
    measured = float(np.median(summary["grad_ratio"].to_numpy(dtype=float)))
    depth = int(summary["depth"].iloc[0]) if "depth" in summary else 0
    seeds = len(summary)
    over = f" (median of {seeds} seeds)" if seeds > 1 else ""
    return (
        f"theory ({verdict}): first/last predicted {predicted:.3g}, measured {measured:.3g}{over}; "
        f"{gap_text(log_ratio_gap(measured, predicted), depth - 1 if depth > 1 else None)}"
    )
