"""`df.to_csv(index=False)`, byte for byte, in about half the time for resflow's tables.

A tidy table repeats itself: the config's columns hold one value per run over thousands of rows, and
pandas formats every cell anew. Here each column is formatted once per distinct value (pandas'
factorize, then a take), and the rows are joined in C (`str.join` over `zip`). Floats are written as
pandas writes them (numpy's shortest repr, which round-trips: the same text as Python's repr), NaN
and None as empty fields, text quoted as the csv module's QUOTE_MINIMAL does. Columns of any other
kind (nullable extension dtypes, categorical, datetime, mixed objects...) and column names that are
not plain strings are handed to pandas, so the text is always pandas'.
tests/test_csvtext.py compares the two on resflow's own tables and on generated frames.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pandas as pd

_MAYBE_QUOTED = (",", '"', "\n", "\r")  # characters that can make the csv module quote a field


def quote(text: str) -> str:
    """The field as pandas' csv writer (Python's csv module, QUOTE_MINIMAL) writes it."""
    if not any(c in text for c in _MAYBE_QUOTED):
        return text
    buf = io.StringIO()  # rare: let the csv module decide (which of these it quotes varies by Python)
    csv.writer(buf, lineterminator=os.linesep).writerow([text, ""])
    return buf.getvalue()[: -len(os.linesep) - 1]


def to_csv_text(df: pd.DataFrame) -> str:
    """The text of `df.to_csv(index=False)`."""
    names = list(df.columns)
    if (
        df.shape[1] < 2
        or not df.columns.is_unique
        or isinstance(df.columns, pd.MultiIndex)
        or not all(isinstance(name, str) for name in names)
    ):  # (one column: the csv module quotes an empty row)
        return df.to_csv(index=False)
    cells = []
    for name in df.columns:
        column = _format(df[name])
        if column is None:  # a kind of column not handled here: pandas formats the lot
            return df.to_csv(index=False)
        cells.append(column)
    nl = os.linesep  # pandas' line terminator
    header = ",".join(quote(str(name)) for name in df.columns)
    if len(df) == 0:
        return header + nl
    return header + nl + nl.join(map(",".join, zip(*cells))) + nl


def csv_rows(columns: list) -> str | None:
    """The lines `to_csv_text` writes below the header for a frame of these columns (numpy arrays of
    equal length, at least two, in order), made without building the frame; None for a column of a
    kind `to_csv_text` hands to pandas (then build the frame and call it)."""
    cells = csv_cells(columns)
    return None if cells is None else csv_lines(cells, 0, len(cells[0]))


def csv_cells(columns: list) -> list[list[str]] | None:
    """Each column's fields as `to_csv_text` writes them (`csv_rows`; None for fewer than two
    columns, or a column of a kind handed to pandas): `csv_lines` joins any run of its rows."""
    if len(columns) < 2:
        return None
    cells = []
    for values in columns:
        column = _format_values(np.asarray(values))
        if column is None:
            return None
        cells.append(column)
    return cells


def csv_lines(cells: list[list[str]], start: int, stop: int) -> str:
    """Rows start..stop of `csv_cells` as CSV lines."""
    if stop <= start:
        return ""
    nl = os.linesep
    return nl.join(map(",".join, zip(*(column[start:stop] for column in cells)))) + nl


def header(names: list[str]) -> str:
    """The header line `to_csv_text` writes for a frame of these (two or more, text) column names."""
    return ",".join(quote(str(name)) for name in names) + os.linesep


def _format(series: pd.Series) -> list[str] | None:
    if not isinstance(series.dtype, np.dtype) and not isinstance(series.dtype, pd.StringDtype):
        return None  # nullable Int64/boolean/Float64, categorical, datetime with a zone...: pandas' own
    return _format_values(series.to_numpy())


def _format_values(values: np.ndarray) -> list[str] | None:
    kind = values.dtype.kind
    if kind == "f":
        if values.dtype.itemsize != 8:
            return None
        zeros = values == 0
        if zeros.any() and np.signbit(values[zeros]).any():  # factorize would merge 0.0 and -0.0
            return ["" if v != v else repr(v) for v in values.tolist()]
        return _by_value(values, _reprs)
    if kind in "iub":
        return _by_value(values, _strs)
    if kind == "O":
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        if inferred in ("string", "empty"):  # text (and missing values): one quote() per distinct value
            return _by_value(values, lambda uniques: [quote(v) for v in uniques])
        if inferred in ("integer", "floating", "mixed-integer-float", "boolean"):
            missing = pd.isna(values)
            return ["" if m else quote(str(v)) for v, m in zip(values.tolist(), missing.tolist())]
    return None


def _reprs(uniques) -> list[str]:
    """Each float's shortest round-tripping text (numpy's and pandas' too): Python's repr."""
    return list(map(repr, np.asarray(uniques, dtype=np.float64).tolist()))


def _strs(uniques) -> list[str]:
    """Ints and bools as Python prints them (tolist: Python ints and bools, whatever their width)."""
    return list(map(str, np.asarray(uniques).tolist()))


def _by_value(values, fmt) -> list[str]:
    """Format each distinct value once (`fmt`: the distinct values -> their texts); missing values
    (code -1) take the last entry, ''."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = np.array([*fmt(uniques), ""], dtype=object)
    return texts[codes].tolist()
