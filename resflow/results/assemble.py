"""The one path from recorded rows to a RunResult: rows -> frames -> summary -> theory overlay.

`resflow.run` (resflow.experiment), training (resflow.train.loop) and any model's `record`, factory
runs and `watch` (resflow.anymodel) all collect their Records' rows into a `Rows` and make their
tables with `assemble`; meta.json is `resflow.results.meta.run_meta`'s, made by the caller (which
knows the device, seeds, steps) and passed in.

The theory overlay is passed in as a function `(grads, summary) -> (grads, summary)`
(`resflow.theory.overlay.overlay(prediction)`): resflow.theory sits above results in the layers
contract, so results never imports it; the caller, which knows the config, makes the prediction.
Training runs pass none (the theory is about the network at initialisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from resflow.results.stats import summarize
from resflow.results.tables import (
    CONFIG_COLUMNS,
    GRADS_COLUMNS,
    MODULE_COLUMN,
    PARAMS_COLUMNS,
    SUMMARY_COLUMNS,
    RunResult,
    grads_frame,
    params_frame,
    summary_frame,
    train_frame,
)

Overlay = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass
class Rows:
    """A run's tidy rows as they are recorded, each table kept as {column: values}."""

    grads: dict[str, list] = field(default_factory=dict)
    params: dict[str, list] = field(default_factory=dict)
    train: dict[str, list] | None = None  # train.csv's rows: training runs and watch

    def add(self, record, variant: str, seed: int, step: int) -> None:
        """Append a Record's (resflow.measure.recorder) rows of grads.csv and params.csv."""
        record.add_rows(self.grads, self.params, variant, seed, step)


def _with_constants(rows: dict[str, list], constants: dict[str, Any]) -> dict[str, list]:
    """A copy of `rows` with the same value in each of `constants`' columns on every row."""
    n = len(rows["seed"])
    return {**rows, **{key: [value] * n for key, value in constants.items()}}


def assemble(
    rows: Rows,
    constants: dict[str, Any],
    *,
    overlay: Overlay | None = None,
    config: dict | None = None,
    meta: dict | None = None,
    module: bool = False,
) -> RunResult:
    """`rows` as a RunResult's tables: `constants` (the config's columns) on every grads and train
    row, the summary of each (variant, seed, step), then `overlay` on grads and summary.

    No grads rows: empty tables with the schema's columns (`module`: any model's, with its `module`
    column too), the overlay still applied so the columns are the same as with rows."""
    if rows.grads.get("seed"):
        grads = grads_frame(_with_constants(rows.grads, constants))
        summary = summary_frame(summarize(grads, CONFIG_COLUMNS))
    else:
        grads = grads_frame({c: [] for c in (*GRADS_COLUMNS, *([MODULE_COLUMN] if module else []))})
        summary = pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    if overlay is not None:
        grads, summary = overlay(grads, summary)
    params = params_frame(rows.params or {c: [] for c in PARAMS_COLUMNS})
    train = train_frame(_with_constants(rows.train, constants)) if rows.train is not None else None
    return RunResult(grads=grads, params=params, summary=summary, config=config or {}, meta=meta or {}, train=train)
