"""The quantity registry: one module per measured quantity, listed here once, in column order.

Every consumer (the recorder's Records, tables' columns, the summary's finite check, terminal
tables, figures, the HTML report, TensorBoard and the trackers, the generated results docs) iterates
over `GRADS` and `PARAMS`; a new quantity is a new module plus its line below. Torch-free.
"""

from __future__ import annotations

from importlib import import_module

from resflow.quantities.base import Quantity

MODULES = (  # the registry: one line per quantity's module, in column order within each table
    "input_grad_norm",
    "activation_rms",
    "param_grad_norm",
    "grad_norm",
    "value_norm",
    "update_ratio",
    "movement",
    "grad_to_weight",
    "grad_hist",
)


def _of(table: str) -> dict[str, Quantity]:
    units = [import_module(f"resflow.quantities.{name}") for name in MODULES]
    found = [q for m in units for q in getattr(m, "QUANTITIES", (getattr(m, "QUANTITY", None),)) if q is not None]
    return {q.name: q for q in found if q.table == table}


GRADS: dict[str, Quantity] = _of("grads")  # grads.csv's quantities, one value per site
PARAMS: dict[str, Quantity] = _of("params")  # params.csv's, one value per parameter
HIST: dict[str, Quantity] = _of("hist")  # hist.csv's: a gradient tensor's histogram rows per parameter (opt-in)
HIST_COLUMNS = ["variant", "seed", "step", "layer", "param", "bin_lo", "bin_hi", "count"]


def leading() -> list[str]:
    """grads.csv's quantity columns before the config columns."""
    return [n for n, q in GRADS.items() if q.leading]


def appended() -> list[str]:
    """grads.csv's quantity columns after the config columns (and any other column): new ones."""
    return [n for n, q in GRADS.items() if not q.leading]


def finite_checked() -> list[str]:
    """grads.csv's columns whose non-finite values flag a run (the summary's `finite`)."""
    return [n for n, q in GRADS.items() if q.finite]


def logged() -> list[str]:
    """grads.csv's columns logged per layer to TensorBoard and the trackers."""
    return [n for n, q in GRADS.items() if q.tag is not None]


def derive(table: str, primitives: dict[str, list]) -> dict[str, list[float]]:
    """Every quantity of `table` whose primitives are all in `primitives` ({name: values per row}), in order."""
    out = {}
    for name, q in (GRADS if table == "grads" else PARAMS).items():
        values = q.values(primitives)
        if values is not None:
            out[name] = values
    return out


__all__ = ["GRADS", "HIST", "HIST_COLUMNS", "PARAMS", "Quantity", "appended", "derive", "finite_checked", "leading", "logged"]
