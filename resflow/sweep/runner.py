"""Running a sweep plan: each point run and persisted as it finishes -> one results dir.

    plan = make_plan(load_base("deep50"), cli_axes=["model.residual=false,true"])
    result = run_sweep(plan, Path("results/deep50-sweep"), workers=2)

A point = one config (all its seeds). Each finished point is written at once, atomically, to
`<out>/points/<index>-<hash>.json` (its grads/params/summary rows); `--resume` skips the points whose
file exists. The final CSVs are always assembled from those files, in point order, so they are the same
bit for bit whatever the number of workers, the completion order, or how many times it was resumed.
Torch is imported only where points run (the workers, or this process with one worker).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import shutil
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from resflow import quantities
from resflow._version import __version__
from resflow.config.schema import validate
from resflow.errors import ConfigError, Interrupted, ResflowError
from resflow.sweep.plan import Plan, Point

POINTS_DIR = "points"
PLAN_FILE = "plan.json"  # written first: marks a (possibly unfinished) sweep dir and what it will hold
TABLES = ("grads", "params", "summary", "train")  # train: training points only (train.steps > 0)


# ---------------------------------------------------------------------------------------------
# Running one point (in a worker: this is where torch is imported)


def run_point(point: Point, allow_code: bool = False) -> str:
    """Run one point and return its file's text: the tables' rows, relabelled, as JSON.

    Each table is {"n": rows, "order": columns, "const": {column: value}, "cols": {column: values}}:
    a column with one value in every row (the config's columns, the swept ones) is stored once, and
    the others compactly (`_encode`: numbers as their float64/int64/bool bytes, text as labels and
    codes), so the file is a fraction of the size and the parent, which reads every point, parses less.
    `allow_code`: the sweep's opt-in for a module:callable factory, decided once in the parent and
    sent with the task.
    """
    import sys

    first = "resflow.experiment" not in sys.modules  # this process's first point
    from resflow.experiment import run

    result = run(validate(point.config), allow_code=allow_code)
    text = encode_point(point, {name: getattr(result, name) for name in TABLES})
    if first:
        del result
        _settle_worker()
    return text


def _settle_worker() -> None:
    """In a pool worker, once its first point has imported all a point needs: collect, then freeze
    what is left (the modules: torch's, pandas', resflow's) out of the cyclic collector's reach. In
    a worker that did not inherit a frozen heap (forkserver, spawn) its full collections walked all
    of them: about a third of a 10-seed point's CPU (issue 29). A worker forked by the CLI imported
    them before its fork (then `first` is False), and the process that started the sweep (a library
    caller's own objects) is left alone."""
    import gc
    import multiprocessing

    from resflow._sys.allocator import freeze_imports

    if multiprocessing.parent_process() is not None:
        gc.collect()  # (the first point's garbage: not frozen with the modules)
        freeze_imports()


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


def _columns(part: dict) -> dict[str, list]:
    """A table of a point payload as {column: values as Python lists}, in CSV order (any form: `_part`)."""
    part = _part(part)
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
    """The payload of a finished point's file, each table's columns decoded (`_part`), or None if the
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
                payload[name] = _part(payload[name])
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


def _part(part: dict) -> dict:
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


def read_finished(out: Path, plan: Plan, parsed: "Assembly", segments=None) -> tuple[set[int], list[Point]]:
    """The points whose files hold valid payloads (noted in `parsed`, and their CSV lines made in
    `segments` if given: read once), and the points whose files were damaged: those files are
    removed, so the points run again."""
    done, damaged = set(), []
    for point in plan.points:
        if not point_path(out, point).is_file():
            continue
        payload = read_point(out, point)
        if payload is None:
            damaged.append(point)
            point_path(out, point).unlink(missing_ok=True)
        else:
            done.add(point.index)
            parsed.add(point.index, payload)
            if segments is not None:
                segments.add(point.index, payload)
    return done, damaged


def plan_record(plan: Plan) -> dict:
    return {
        "resflow": __version__,
        "config": plan.config_yaml(),
        "axes": [{"key": a.key, "column": a.column, "values": list(a.values), "origin": a.origin} for a in plan.axes],
        "points": [p.key for p in plan.points],
    }


def prepare_out(out: Path, plan: Plan, resume: bool, force: bool) -> None:
    """Create or check the output dir; fail before any work if it cannot hold this sweep."""
    from resflow._sys.files import write_text_atomic
    from resflow.results.files import check_out_dir, check_out_path, is_results_dir

    out = Path(out)
    check_out_path(out)
    record = plan_record(plan)
    plan_file = out / PLAN_FILE
    if resume:
        if not plan_file.is_file():
            raise ConfigError(f"--resume: {str(out)!r} holds no sweep to resume (no {PLAN_FILE}); drop --resume to start one")
        if _read_plan(plan_file).get("points") != record["points"]:
            raise ConfigError(
                f"--resume: {str(out)!r} holds a different sweep (its config or axes differ from these); "
                f"resume with the same config and --over, or pass --out to start a new sweep"
            )
        _check_points_dir(out)
        return
    if out.is_dir() and any(out.iterdir()):
        if not force:
            if plan_file.is_file():
                if _read_plan(plan_file).get("points") != record["points"]:
                    raise ConfigError(
                        f"{str(out)!r} already holds a different sweep; pass --force to replace it or --out to write elsewhere"
                    )
                done = len(finished(out, plan))
                raise ConfigError(
                    f"{str(out)!r} already holds this sweep ({done} of {len(plan.points)} points finished); "
                    f"pass --resume to continue it, --force to start over, or --out to write elsewhere"
                )
            check_out_dir(out, force=False)
        if not (plan_file.is_file() or is_results_dir(out)):
            raise ConfigError(f"{str(out)!r} is not a resflow results dir; refusing to replace it (choose another --out)")
        check_out_dir(out, force=True)  # nothing in it but resflow's own files, and not the current directory
        shutil.rmtree(out)
    check_out_dir(out, force=False)
    existed = out.exists()
    try:
        (out / POINTS_DIR).mkdir(parents=True, exist_ok=True)
        write_text_atomic(plan_file, json.dumps(record, indent=1) + "\n")
    except BaseException as err:  # a full disk, a signal: no half-made sweep dir left behind
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(err, OSError):
            raise ResflowError(f"cannot create the results dir {str(out)!r}: {err.strerror or err}") from None
        raise


def _check_points_dir(out: Path) -> None:
    """--resume writes point files into <out>/points/: it must be a real directory (made if missing),
    never a link to somewhere else, nor a file."""
    from resflow._sys.files import not_replaceable

    points = out / POINTS_DIR
    kind = not_replaceable(points)
    if kind is None and points.exists():
        kind = "a file"
    if kind not in (None, "a directory"):
        raise ConfigError(
            f"--resume: {str(points)!r} is {kind}, not the sweep's directory of point files; "
            "resflow never writes through it: remove it, or pass --force to start the sweep over"
        )
    if kind is None:
        points.mkdir()


def _read_plan(plan_file: Path) -> dict:
    try:
        return json.loads(plan_file.read_text())
    except (OSError, ValueError) as err:
        raise ResflowError(f"cannot read {str(plan_file)!r}: {err}") from None


def default_out(plan: Plan) -> Path:
    """results/<name>-sweep, plus -<column>... for the axes given explicitly (so sweeps of different
    axes do not collide): deep50 over depths -> results/deep50-sweep; over residual -> results/deep50-sweep-residual."""
    given = [a.column for a in plan.axes if a.origin != "default"]
    return Path("results") / "-".join([f"{plan.base.name}-sweep", *given])


def save_point(out: Path, point: Point, text: str) -> None:
    from resflow._sys.files import write_text_atomic

    write_text_atomic(point_path(out, point), text)


def assemble(out: Path, plan: Plan):
    """The tables from the point files, in point order, all in memory (`stream_tables` writes them
    without holding them; this is for the sweeps whose columns it cannot type ahead)."""
    payloads = []
    for point in plan.points:
        payload = read_point(out, point)
        if payload is None:
            raise damaged_error(out, point)
        payloads.append(payload)
    return tables(payloads, plan.columns)


def damaged_error(out: Path, point: Point, hint: str = "") -> ResflowError:
    return ResflowError(f"{str(point_path(out, point))!r} is damaged; rerun with: {hint or 'the same command plus --resume'}")


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
        part = _columns(raw)
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


# ---------------------------------------------------------------------------------------------
# Streaming assembly: the final tables written from the point files, a chunk of points at a time

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
# values: ints with a missing value are floats); None: not one `_chunk_frame` can build (the sweep
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
        """Note a point's payload (decoded: `read_point`, or a worker's text parsed and `_part`'ed)."""
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


def _chunk_frame(parts: list[dict], columns: list[str], dtypes: dict[str, str]):
    """The rows of these points' parts as one frame, the whole table's columns and dtypes."""
    import pandas as pd

    return pd.DataFrame(dict(zip(columns, chunk_columns(parts, columns, dtypes))), columns=columns)


def chunk_rows(parts: list[dict], columns: list[str], dtypes: dict[str, str]) -> bytes:
    """The CSV lines of these points' rows (no header): those of `to_csv_text(_chunk_frame(...))`,
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


def stream_tables(out: Path, plan: Plan, asm: Assembly, fmt: str, hint: str = "") -> tuple[dict[str, int], dict] | None:
    """Write grads, params (and train) from the point files, CHUNK_ROWS rows at a time, byte for byte
    what writing the whole tables gives (results/files.py: TableStream); returns their rows and each
    point's profile (`profile_medians`: its median over seeds at each site), or None when a table
    cannot be streamed (nothing is left written then)."""
    from contextlib import ExitStack

    from resflow.results.files import ChunkTypes, TableStream
    from resflow.results.stats import profile_medians

    layouts = {name: asm.layout(name, plan) for name in STREAMED if asm.orders[name]}
    if any(layout is None for layout in layouts.values()):
        return None
    profiles: dict = {}
    try:
        with ExitStack() as stack:
            streams = {name: stack.enter_context(TableStream(out, name, fmt)) for name in layouts}
            batch: dict[str, list] = {name: [] for name in layouts}
            held = 0

            def flush() -> None:
                for name, parts in batch.items():
                    if parts:
                        frame = _chunk_frame(parts, *layouts[name])
                        if name == "grads":
                            profiles.update(profile_medians(frame))
                        streams[name].write(frame)
                        parts.clear()

            for point in plan.points:
                payload = read_point(out, point)
                if payload is None:
                    raise damaged_error(out, point, hint)
                for name in layouts:
                    if name in payload:
                        batch[name].append(payload[name])
                        held += payload[name]["n"]
                if held >= CHUNK_ROWS:
                    flush()
                    held = 0
            flush()
    except (NotStreamable, ChunkTypes):
        return None
    return {name: stream.rows for name, stream in streams.items()}, profiles


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepRun:
    """What `run_sweep` reports: the summary and each point's profile in memory (what the terminal
    table needs), the other tables on disk, read on demand (`result`: a RunResult of the whole dir)."""

    plan: Plan
    skipped: int  # points found finished (--resume)
    ran: int
    path: Path
    summary: Any  # pd.DataFrame: summary.csv's rows
    profiles: dict  # variant -> its median ||dloss/dx|| per site (stats.profile_medians)
    trained: bool = False  # a train table was written
    _result: Any = None

    @property
    def result(self):
        """The results dir as `resflow.load` reads it (every table in memory: read when first asked)."""
        if self._result is None:
            from resflow.results.files import read_run

            self._result = read_run(self.path)
        return self._result


def run_sweep(
    plan: Plan,
    out: Path,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    force: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_point: Callable[[Point], None] | None = None,
    resume_hint: str = "",
    fmt: str = "csv",
    slurm_options: dict | None = None,
    on_note: Callable[[str], None] | None = None,
    allow_code: bool | None = None,
) -> SweepRun:
    """Run every unfinished point, persist each as it finishes, then write the CSVs.

    The backend is reached first (a Ray cluster: in bounded time), so nothing is created for a sweep
    that cannot run. A failure that leaves the finished points usable (a worker killed, the cluster
    lost, a full disk) says how to finish the sweep with --resume. `allow_code`: may a
    `module:callable` factory run (resflow.models.factory.check; unset: RESFLOW_ALLOW_CODE)."""
    from resflow._sys.code import check, code_allowed
    from resflow.errors import EnvironmentFault
    from resflow.executors import pool as backends
    from resflow.results.files import check_format

    out = Path(out)
    check_format(fmt)  # before any work
    allow_code = code_allowed(allow_code)  # decided here, once: every worker is sent this decision
    for point in plan.points:
        check(point.config["model"].get("factory"), allow_code)
    backends.check_backend(plan.points, backend)  # before the dir is made
    if backend == "local" and any(p.config.get("device") == "cuda" for p in plan.points):
        from resflow.measure.device import resolve_device

        resolve_device("cuda")  # a ConfigError where there is none, as for `resflow run`
    workers = backends.default_workers() if workers is None else workers
    hint = resume_hint or "the same command plus --resume"
    with backends.connected(backend, workers, ray_address):
        try:
            return _run_sweep(
                plan,
                out,
                workers,
                backend,
                ray_address,
                resume,
                force,
                on_start,
                on_point,
                resume_hint,
                fmt=fmt,
                slurm_options=slurm_options,
                on_note=on_note,
                allow_code=allow_code,
            )
        except ResflowError as err:
            resumable = getattr(err, "resumable", False) or isinstance(err, EnvironmentFault)
            if not resumable or not (out / PLAN_FILE).is_file():
                raise
            text = str(err).removesuffix("; finished points are saved: rerun with --resume")
            raise ResflowError(
                f"{text}; the finished points are saved in {out}/{POINTS_DIR}/: once that is fixed, "
                f"finish the sweep with: {hint}",
                exit_code=err.exit_code,
            ) from None


def _run_sweep(
    plan: Plan,
    out: Path,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    force: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_point: Callable[[Point], None] | None = None,
    resume_hint: str = "",
    fmt: str = "csv",
    slurm_options: dict | None = None,
    on_note: Callable[[str], None] | None = None,
    allow_code: bool = False,
) -> SweepRun:
    """Run every unfinished point, persist each as it finishes, then write the tables (`fmt`: csv,
    parquet or both; the point files are JSON whatever the format, so --resume reads them alike)."""
    from resflow._sys.files import write_text_atomic
    from resflow.executors import pool as backends
    from resflow.results.files import check_format
    from resflow.results.meta import run_meta

    check_format(fmt)  # before any work
    out = Path(out)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    prepare_out(out, plan, resume, force)
    with _segments(out, plan, fmt) as segments:  # (its spill files go when the block ends)
        parsed = Assembly()  # what the tables need of each point: those found finished, then each as it arrives
        done, damaged = read_finished(out, plan, parsed, segments) if resume else (set(), [])
        if damaged and on_note is not None:
            names = ", ".join(point_path(out, p).name for p in damaged[:3]) + (
                f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
            )
            on_note(f"note: {len(damaged)} point file(s) in {out}/{POINTS_DIR}/ were damaged ({names}); those points run again")
        todo = [p for p in plan.points if p.index not in done]
        if on_start is not None:
            on_start(len(plan.points), len(done))

        def save(point: Point, text: str) -> None:
            save_point(out, point, text)
            failed_path(out, point).unlink(missing_ok=True)  # a retried point that now succeeded
            payload = _payload(text)
            parsed.add(point.index, payload)
            if segments is not None:
                segments.add(point.index, payload)  # its CSV lines, made while the workers run the others
            if on_point is not None:
                on_point(point)

        failed: list[tuple[Point, str]] = []

        def fail(point: Point, error: str) -> None:
            failed.append((point, error))
            write_text_atomic(failed_path(out, point), f"{point.variant}: {error}\n")
            if on_point is not None:
                on_point(point)

        worker_versions = None  # Ray's workers' versions (a remote cluster's may differ from this machine's)
        try:
            if todo:
                worker_versions = backends.execute(
                    todo,
                    functools.partial(run_point, allow_code=True) if allow_code else run_point,
                    save,
                    workers=workers,
                    backend=backend,
                    ray_address=ray_address,
                    fail=fail,
                    out=out,
                    slurm_options=slurm_options,
                )
        except KeyboardInterrupt as err:
            from resflow._sys.signals import exit_code, signal_name

            saved = len(finished(out, plan))
            raise Interrupted(
                f"interrupted ({signal_name(err)}): {saved} of {len(plan.points)} points are saved in {out}/{POINTS_DIR}/; "
                f"finish the sweep with: {resume_hint or 'the same command plus --resume'}",
                exit_code=exit_code(err),
            ) from None
        if failed:
            first, error = min(failed, key=lambda f: f[0].index)
            raise ResflowError(
                f"{len(failed)} of {len(plan.points)} sweep points failed (first: {first.variant}: {error}; all in "
                f"{out}/{POINTS_DIR}/*.failed.txt); the other points are saved; retry the failed ones with: "
                f"{resume_hint or 'the same command plus --resume'}"
            )

        for point in plan.points:  # (all are noted by now: finished ones were read and checked above)
            if point.index not in parsed:
                payload = read_point(out, point)
                if payload is None:
                    raise damaged_error(out, point, resume_hint)
                parsed.add(point.index, payload)
        meta = run_meta(
            started,
            t0,
            kind="sweep",
            axes=[{"key": a.key, "column": a.column, "values": list(a.values)} for a in plan.axes],
            points=len(plan.points),
            resumed_points=len(done),
            workers=workers,
            backend=backend,
            **({"worker_versions": worker_versions} if worker_versions else {}),
        )
        return write_tables(out, plan, parsed, fmt, meta, resume_hint, segments=segments, skipped=len(done), ran=len(todo))


def _segments(out: Path, plan: Plan, fmt: str):
    """Where each point's CSV lines go as it arrives (resflow/sweep/segments.py); CSV only (Parquet
    is streamed from the point files at the end)."""
    from contextlib import nullcontext

    from resflow.sweep.segments import Segments

    return Segments(out, plan) if fmt == "csv" else nullcontext()


def _payload(text: str) -> dict:
    """A worker's point text, its tables decoded as `read_point` gives them."""
    payload = json.loads(text)
    for name in TABLES:
        if name in payload:
            payload[name] = _part(payload[name])
    return payload


def write_tables(
    out: Path, plan: Plan, parsed: Assembly, fmt: str, meta: dict, hint: str = "", segments=None, **counts
) -> SweepRun:
    """The final tables: from the lines made as the points arrived (`segments`, CSV), else streamed
    from the point files (`stream_tables`), else (columns whose dtype cannot be told ahead) assembled
    in memory; then the summary, config.yaml and meta.json."""
    from resflow.results.files import write_config_meta, write_csv, write_files, write_parquet
    from resflow.results.stats import profile_medians
    from resflow.results.tables import RunResult

    summary = table_frame("summary", [parsed.summary[p.index] for p in plan.points], plan.columns)
    config = plan.config_yaml()
    streamed = segments.write(parsed, hint) if segments is not None else None
    if streamed is None:
        streamed = stream_tables(out, plan, parsed, fmt, hint)
    if streamed is None:
        frames = assemble(out, plan)
        result = RunResult(config=config, meta=meta, path=out, **frames)
        write_files(result, out, fmt=fmt)
        return SweepRun(
            plan,
            path=out,
            summary=summary,
            profiles=profile_medians(frames["grads"]),
            trained=frames["train"] is not None,
            _result=result,
            **counts,
        )
    rows, profiles = streamed
    if fmt != "parquet":
        write_csv(summary, out / "summary.csv")
    if fmt != "csv":
        write_parquet(summary, out / "summary.parquet")
    write_config_meta(out, config, meta, {**rows, "summary": len(summary)})
    return SweepRun(plan, path=out, summary=summary, profiles=profiles, trained="train" in rows, **counts)


def sweep_columns(meta: dict) -> list[str]:
    """The swept columns recorded in a sweep's meta.json."""
    return [a["column"] for a in meta.get("axes", [])]


def unfinished_sweep(path: Path) -> tuple[int, int] | None:
    """(finished, total) points if `path` holds a sweep whose CSVs are not written yet."""
    plan_file = Path(path) / PLAN_FILE
    if not plan_file.is_file() or any((Path(path) / f"summary.{ext}").is_file() for ext in ("csv", "parquet")):
        return None
    try:
        keys = json.loads(plan_file.read_text()).get("points", [])
    except (OSError, ValueError):
        return None
    have = {f.stem for f in (Path(path) / POINTS_DIR).glob("*.json")}
    return len([k for k in keys if k in have]), len(keys)
