"""A sweep's point files: each point's tables encoded compactly, read back and checked, and the
layout the final tables take from them (column order, value kinds, chunks of rows).

Shared by resflow.sweep.runner (which writes and assembles them) and resflow.sweep.segments (which
formats their CSV lines as they arrive); it imports neither.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path
from typing import Any

from resflow import quantities
from resflow.errors import ResflowError
from resflow.sweep.plan import Plan, Point

POINTS_DIR = "points"
TABLES = ("grads", "params", "summary", "train")  # train: training points only (train.steps > 0)


def encode_point(point: Point, frames: dict) -> str:
    """A point file's text from its tables (`frames`: name -> DataFrame or None), relabelled as `point`'s."""
    payload = {"format": FORMAT, "index": point.index, "hash": point.hash, "variant": point.variant}
    for name in TABLES:
        df = frames.get(name)
        if df is None:  # no train table when measuring at initialisation
            continue
        order = [*df.columns, *(["variant"] if "variant" not in df.columns else [])]
        const = {"variant": point.variant}
        for col, value in point.columns.items():
            if col not in order:  # a swept key already among the config columns keeps its place
                order.append(col)
            const[col] = value
        cols = {}
        for col in df.columns:
            if col in const:
                continue
            kind, value = _encode(df[col])
            (const if kind == "const" else cols)[col] = value
        payload[name] = {"n": len(df), "order": order, "const": const, "cols": cols}
    return json.dumps(payload, allow_nan=True)


FORMAT = 3  # 2: const/cols tables of JSON lists; 3: their columns as bytes (`_encode`)
_NUMERIC = {"f": "<f8", "i": "<i8", "u": "<i8", "b": "|b1"}  # as `tolist()` gives them: float, int, bool


def _encode(series) -> tuple[str, Any]:
    """("const", value) for a column with one value in every row, as the CSV would print it; else
    ("cols", stored): a number column as the zlib'd bytes of its float64/int64/bool values (exactly
    the values `tolist()` gives), a text column as its labels and their codes, anything else a list."""
    import numpy as np

    kind = series.dtype.kind if isinstance(series.dtype, np.dtype) else "O"
    if kind in _NUMERIC and len(series):
        values = series.to_numpy()
        if kind == "u" and values.max() > np.iinfo(np.int64).max:
            return "cols", series.tolist()
        values = values.astype(_NUMERIC[kind], copy=False)
        first = values[0]
        same = values == first
        if kind == "f" and first == 0:
            same &= np.signbit(values) == np.signbit(first)  # 0.0 and -0.0 print differently
        if same.all():  # (NaN is never equal to itself: a NaN column is stored whole)
            return "const", first.item()
        return "cols", _pack(values)
    values = series.tolist()
    if _constant(values, kind):
        return "const", values[0]
    if values and all(type(v) is str for v in values):
        codes, labels = _factorize(values)
        return "cols", {"labels": labels, "codes": _pack(codes)}
    return "cols", values


def _factorize(values: list[str]):
    import numpy as np

    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int32, count=len(values))
    return codes, list(index)


def _pack(values) -> dict:
    return {"dtype": values.dtype.str, "z": base64.b64encode(zlib.compress(values.tobytes(), 1)).decode("ascii")}


def _unpack(stored: dict, n: int):
    """The array `_pack` stored; ValueError if it is not one of `n` values."""
    import numpy as np

    try:
        values = np.frombuffer(zlib.decompress(base64.b64decode(stored["z"], validate=True)), dtype=np.dtype(stored["dtype"]))
    except (zlib.error, TypeError) as err:
        raise ValueError(str(err)) from None
    if values.dtype.kind not in "fiub" or len(values) != n:
        raise ValueError(f"{len(values)} values of {values.dtype}, not {n} numbers")
    return values


def _decode(stored, n: int):
    """A stored column (`_encode`) as a list, or an array of numbers or of text (object); ValueError
    if it does not hold `n` values."""
    import numpy as np

    if isinstance(stored, (list, np.ndarray)):
        values = stored
    elif isinstance(stored, dict) and "labels" in stored:
        labels = stored["labels"]
        codes = _unpack(stored["codes"], n)
        if not isinstance(labels, list) or not all(type(v) is str for v in labels) or codes.dtype.kind not in "iu":
            raise ValueError("bad text column")
        if n and (codes.min() < 0 or codes.max() >= len(labels)):
            raise ValueError("a code past the labels")
        values = np.asarray(labels, dtype=object)[codes] if labels else np.empty(0, dtype=object)
    elif isinstance(stored, dict):
        values = _unpack(stored, n)
    else:
        raise ValueError(f"not a column: {type(stored).__name__}")
    if len(values) != n:
        raise ValueError(f"{len(values)} values, not {n}")
    return values


def _constant(values: list, kind: str) -> bool:
    """Every value the same, as the CSV would print it: not merely == (True == 1 == 1.0, 0.0 == -0.0)."""
    if not values:
        return False
    first = values[0]
    if values.count(first) != len(values):  # (distinct NaN objects are never equal: kept as a list)
        return False
    if kind == "O":  # an object column can hold True and 1 side by side
        return all(type(v) is type(first) for v in values)
    if kind == "f" and first == 0:
        return len({math.copysign(1.0, v) for v in values}) == 1
    return True


def part_columns(part: dict) -> dict[str, list]:
    """A table of a point payload as {column: values as Python lists}, in CSV order (any form: `decoded_part`)."""
    part = decoded_part(part)
    n, const, cols = part["n"], part["const"], part["cols"]
    out = {}
    for col in part["order"]:
        if col in cols:
            values = _decode(cols[col], n)
            out[col] = values if isinstance(values, list) else values.tolist()
        else:
            out[col] = [const[col]] * n
    return out


# ---------------------------------------------------------------------------------------------
# The results dir: plan, point files, assembly


def point_path(out: Path, point: Point) -> Path:
    return out / POINTS_DIR / f"{point.key}.json"


def failed_path(out: Path, point: Point) -> Path:
    """Where a point that raised leaves its error (removed when a --resume runs it successfully)."""
    return out / POINTS_DIR / f"{point.key}.failed.txt"


def finished(out: Path, plan: Plan) -> set[int]:
    return {p.index for p in plan.points if point_path(out, p).is_file()}


def read_point(out: Path, point: Point) -> dict | None:
    """The payload of a finished point's file, each table's columns decoded (`decoded_part`), or None if the
    file is not a whole, valid payload of this point (truncated, random bytes, another point's): such
    a file is not trusted, but re-run. The one reader of point files (resume, assembly)."""
    try:
        payload = json.loads(point_path(out, point).read_bytes())
    except (OSError, ValueError):  # (UnicodeDecodeError is a ValueError)
        return None
    if not isinstance(payload, dict) or payload.get("index") != point.index or payload.get("hash") != point.hash:
        return None
    if not all(isinstance(payload.get(name), dict) for name in ("grads", "params", "summary")):
        return None
    if _const(payload["grads"]).get("variant", point.variant) != point.variant:
        return None
    try:
        for name in TABLES:
            if name in payload:
                payload[name] = decoded_part(payload[name])
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    for name in TABLES:  # a hand-edited or crafted file: run again rather than fail the assembly
        part = payload.get(name)
        if part is None:
            continue
        if not all(_well_typed(col, [v], name) for col, v in part["const"].items()):
            return None
        if not all(_well_typed(col, values, name) for col, values in part["cols"].items() if isinstance(values, list)):
            return None
    return payload


def decoded_part(part: dict) -> dict:
    """A table of a payload as {"n", "order", "const", "cols"}, its stored columns decoded (`_decode`:
    lists or arrays), whichever form it was written in; ValueError/TypeError/KeyError if it is not
    whole (a column missing or of the wrong length)."""
    if "order" not in part:  # the all-lists form, before format 2
        cols = dict(part)
        n = len(next(iter(cols.values()), []))
        part = {"n": n, "order": list(cols), "const": {}, "cols": cols}
    n, order, const, cols = part["n"], part["order"], part["const"], part["cols"]
    if type(n) is not int or n < 0 or not isinstance(order, list) or not isinstance(const, dict) or not isinstance(cols, dict):
        raise ValueError("not a table")
    if not all(isinstance(col, str) and (col in const or col in cols) for col in order):
        raise ValueError("a column missing")
    return {"n": n, "order": order, "const": const, "cols": {col: _decode(values, n) for col, values in cols.items()}}


def _const(part) -> dict:
    const = part.get("const") if isinstance(part, dict) else None
    return const if isinstance(const, dict) else {}


SCALARS = (str, int, float, bool, type(None))  # what a column of a point file holds (a CSV cell)
NUMBERS = (  # columns that hold numbers in every table that has them (the keys, then the measures)
    {"seed", "step", "layer", "depth", "width", "init_scale"}
    | set(quantities.GRADS)  # the measured quantities (resflow.quantities)
    | set(quantities.PARAMS)
    | {"loss", "eval_loss", "grad_norm_total", "lr", "wall_time_s", "task_floor", "task_baseline"}
    | {"grad_first", "grad_last", "grad_ratio", "log10_grad_ratio", "gain_per_layer", "log10_ratio_sd", "ratio_q25"}
    | {"ratio_q75"}
)
KEYS = {"seed", "step", "layer"}  # never empty


def _well_typed(column: str, values: list, table: str = "") -> bool:
    """A column of a point file as resflow writes it: CSV cells (no lists or mappings); a number
    column's values numbers (a key's never missing), so that a hand-edited or crafted file is run
    again on --resume rather than failing the assembly or being written into the CSVs."""
    if column in NUMBERS and not (column == "loss" and table != "train"):  # (a config's `loss` is a word)
        allowed = (int, float) if column in KEYS else (int, float, type(None))
        return all(isinstance(v, allowed) and not isinstance(v, bool) for v in values)
    return all(isinstance(v, SCALARS) for v in values)


def damaged_error(out: Path, point: Point, hint: str = "") -> ResflowError:
    return ResflowError(f"{str(point_path(out, point))!r} is damaged; rerun with: {hint or 'the same command plus --resume'}")


CHUNK_ROWS = 100_000  # rows (of all tables) read before a chunk is written: bounds the memory
STREAMED = ("grads", "params", "train")  # the summary (one row per run) is kept whole: the report reads it


def value_tag(value) -> str:
    """The kind of a stored value, as pandas types a column from it: b(ool), i(nt), f(loat), s(tr),
    n(one), o(ther)."""
    kind = type(value)
    if kind is bool:
        return "b"
    if kind is int:
        return "i"
    if kind is float:
        return "f"
    if kind is str:
        return "s"
    return "n" if value is None else "o"


def value_tags(values) -> set[str]:
    import numpy as np

    if isinstance(values, np.ndarray):
        return {"s"} if values.dtype.kind == "O" else {{"u": "i"}.get(values.dtype.kind, values.dtype.kind)}
    return set(map(value_tag, values))


# The dtype of a whole column from the kinds of value its points stored (as pandas infers it from the
# values: ints with a missing value are floats); None: not one `chunk_frame` can build (the sweep
# assembles in memory instead).
def _dtype(tags: set[str]) -> str | None:
    if tags == {"b"}:
        return "bool"
    if tags == {"i"}:
        return "int64"
    if tags <= {"f", "i", "n"} and tags & {"f", "n"} and tags != {"n"}:
        return "float64"
    if tags <= {"s", "n"}:
        return "object"  # text; all missing: empty
    return None


class Assembly:
    """What the streamed tables need from every point before the first row is written: each table's
    columns (their order, in each point) and the kinds of value stored in them; and the summary rows.
    Small (a few values per column and point), so the payloads themselves need not be kept."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[int, tuple]] = {name: {} for name in TABLES}  # point -> column order
        self.kinds: dict[str, dict[str, set]] = {name: {} for name in TABLES}  # column -> value kinds
        self.present: dict[str, dict[str, int]] = {name: {} for name in TABLES}  # column -> points having it
        self.rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.summary: dict[int, dict] = {}  # point -> its summary part
        self._interned: dict[tuple, tuple] = {}

    def __contains__(self, index: int) -> bool:
        return index in self.summary

    def add(self, index: int, payload: dict) -> None:
        """Note a point's payload (decoded: `read_point`, or a worker's text parsed and `decoded_part`'ed)."""
        for name in TABLES:
            if name in payload:
                self.add_table(name, index, payload[name])
        self.summary[index] = payload["summary"]

    def add_table(self, name: str, index: int, part: dict) -> None:
        """Note one table of a point's payload."""
        order = tuple(part["order"])
        self.orders[name][index] = self._interned.setdefault(order, order)
        self.rows[name] += part["n"]
        kinds, present = self.kinds[name], self.present[name]
        for col in order:
            present[col] = present.get(col, 0) + 1
            found = kinds.setdefault(col, set())
            if col in part["cols"]:
                found |= value_tags(part["cols"][col])
            elif part["n"]:
                found.add(value_tag(part["const"][col]))

    def layout(self, name: str, plan: Plan) -> tuple[list[str], dict[str, str]] | None:
        """Table `name`'s CSV columns in order and each one's dtype; None if one cannot be typed ahead."""
        orders = self.orders[name]
        if not orders or not self.rows[name]:
            return None
        in_order = [orders[point.index] for point in plan.points if point.index in orders]
        return layout_of(name, in_order, self.kinds[name], self.present[name], plan.columns)


def layout_of(name: str, orders: list[tuple], kinds: dict, present: dict, columns: list[str]):
    """`Assembly.layout` from the points' column orders (in point order), the kinds of value stored
    in each column and how many points have it; None if a column cannot be typed ahead."""
    import pandas as pd

    union: dict[str, None] = {}
    for order in orders:  # first appearance, in point order (as `table_frame`)
        for col in order:
            union.setdefault(col, None)
    empty = table_frame(name, [{"n": 0, "order": list(union), "const": {}, "cols": dict.fromkeys(union, [])}], columns)
    dtypes = {}
    for col in union:
        tags = kinds[col] | ({"n"} if present[col] < len(orders) else set())
        dtypes[col] = _dtype(tags)
        if dtypes[col] is None:
            return None
    assert isinstance(empty, pd.DataFrame)
    return list(empty.columns), dtypes


class NotStreamable(Exception):
    """A table whose chunks would not print as the whole table does: the sweep assembles in memory."""


def chunk_column(pieces: list, ns: list[int], dtype: str):
    """One column of a chunk: each point's values (a constant, a list or an array) in `dtype`."""
    import numpy as np

    try:
        if all(kind == "const" for kind, _ in pieces):
            return np.repeat(np.array([v for _, v in pieces], dtype=dtype), ns)
        return np.concatenate(
            [np.full(n, v, dtype=dtype) if kind == "const" else np.asarray(v, dtype=dtype) for (kind, v), n in zip(pieces, ns)]
        )
    except (OverflowError, TypeError, ValueError) as err:  # an int past int64: pandas would not make it int64 either
        raise NotStreamable(str(err)) from None


def chunk_columns(parts: list[dict], columns: list[str], dtypes: dict[str, str]) -> list:
    """The rows of these points' parts, column by column (arrays), the whole table's columns and dtypes."""
    ns = [p["n"] for p in parts]
    data = []
    for col in columns:
        pieces = [("cols", p["cols"][col]) if col in p["cols"] else ("const", p["const"].get(col)) for p in parts]
        data.append(chunk_column(pieces, ns, dtypes[col]))
    return data


def chunk_frame(parts: list[dict], columns: list[str], dtypes: dict[str, str]):
    """The rows of these points' parts as one frame, the whole table's columns and dtypes."""
    import pandas as pd

    return pd.DataFrame(dict(zip(columns, chunk_columns(parts, columns, dtypes))), columns=columns)


def chunk_rows(parts: list[dict], columns: list[str], dtypes: dict[str, str]) -> bytes:
    """The CSV lines of these points' rows (no header): those of `to_csv_text(chunk_frame(...))`,
    formatted from the columns without building the frame where csvtext can (`csv_rows`)."""
    import os

    from resflow.results.csvtext import csv_rows, to_csv_text

    data = chunk_columns(parts, columns, dtypes)
    text = csv_rows(data)
    if text is None:
        import pandas as pd

        frame = pd.DataFrame(dict(zip(columns, data)), columns=columns)
        text = to_csv_text(frame).partition(os.linesep)[2]
    return text.encode("utf-8")


def tables(payloads: list[dict], columns: list[str]) -> dict:
    """grads/params/summary DataFrames from points' payloads (in the order given), and `train` (None
    unless some point trained: then train.csv's rows of every training point)."""
    return {name: table_frame(name, [p[name] for p in payloads if name in p], columns) for name in TABLES}


def table_frame(name: str, parts: list[dict], columns: list[str]):
    """Table `name` from its parts (one per point, in order), as the CSV holds it: every point's
    columns in order of first appearance, then the schema's order (results/tables.py), then the
    swept `columns` last, in axis order; a column a point lacks is empty in its rows. None for a
    train table no point has."""
    import pandas as pd

    from resflow.results.tables import appended_last, grads_frame, params_frame, summary_frame, train_frame

    if name == "train" and not parts:
        return None
    rows: dict[str, list] = {}
    for raw in parts:
        part = part_columns(raw)
        n = len(next(iter(part.values()), []))
        before = len(next(iter(rows.values()), [])) if rows else 0
        for col in list(rows) + [c for c in part if c not in rows]:  # ordered: stable CSV columns
            column = rows.setdefault(col, [None] * before)
            column.extend(part.get(col, [None] * n))
    build = {
        "grads": grads_frame,
        "params": params_frame,
        "summary": lambda r: summary_frame(pd.DataFrame(r)),
        "train": train_frame,
    }
    df = build[name](rows)
    extra = [c for c in columns if c in df.columns]  # the swept columns after the schema's columns, in axis order
    df = df[[c for c in df.columns if c not in extra] + extra] if extra else df
    return appended_last(df) if name == "grads" else df  # (the newer quantities' columns last)
