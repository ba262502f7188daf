"""Sweeps: axes -> a grid of points -> each point run and persisted as it finishes -> one results dir.

    plan = make_plan(load_base("deep50"), cli_axes=["model.residual=false,true"])
    result = run_sweep(plan, Path("results/deep50-sweep"), workers=2)

An axis is a dotted config key and its values, from `--over KEY=V1,V2` or a `sweep:` section in the
YAML; several axes form a grid (Cartesian product, first axis slowest). Unless an axis names
`model.depth`, the depth axis 1, 2, 4, ... up to the config's depth (plus that depth) is added last.
Every value is validated through the config's own validation, so errors name the key.

A point = one config (all its seeds). Each finished point is written at once, atomically, to
`<out>/points/<index>-<hash>.json` (its grads/params/summary rows); `--resume` skips the points whose
file exists. The final CSVs are always assembled from those files, in point order, so they are the same
bit for bit whatever the number of workers, the completion order, or how many times it was resumed.
Torch is imported only by the workers (resflow.backends).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from resflow import __version__
from resflow.config import Config, parse_override, read_yaml, resolve_config_path, validate
from resflow.errors import ConfigError, Interrupted, ResflowError

POINTS_DIR = "points"
PLAN_FILE = "plan.json"  # written first: marks a (possibly unfinished) sweep dir and what it will hold
NOT_SWEEPABLE = ("name", "sweep")
TABLES = ("grads", "params", "summary", "train")  # train: training points only (train.steps > 0)


# ---------------------------------------------------------------------------------------------
# Axes


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config key, e.g. model.init.scale
    values: tuple  # validated values, as the config holds them (1 -> 1.0 for a float key)
    origin: str = "--over"  # "--over", "sweep:" or "default"

    @property
    def column(self) -> str:
        return short_key(self.key)


def short_key(key: str) -> str:
    """The CSV column of a swept key: the dotted key without its `model.`/`data.` section, dots as
    underscores (model.depth -> depth, model.init.scale -> init_scale, data.batch_size -> batch_size,
    seed -> seed): the same names as the config columns that every results CSV already has."""
    parts = key.split(".")
    if len(parts) > 1 and parts[0] in ("model", "data"):
        parts = parts[1:]
    return "_".join(parts)


def parse_over(item: str) -> tuple[str, list]:
    """'model.depth=1,2,5' -> ('model.depth', [1, 2, 5]); values read as YAML; `[a, b]` also works."""
    if "=" not in item:
        raise ConfigError(f"--over {item!r}: expected KEY=V1,V2,..., e.g. --over model.depth=1,2,5")
    key, raw = parse_override(item)  # checks the key's shape; the value is re-read below
    text = item.partition("=")[2].strip()
    if text.startswith("["):
        values = raw
    else:
        parts = [p.strip() for p in text.split(",")] if text else []
        if any(p == "" for p in parts):
            raise ConfigError(f"--over {item!r}: empty value in the list (write KEY=V1,V2,...)")
        try:
            values = [yaml.safe_load(p) for p in parts]
        except yaml.YAMLError:
            raise ConfigError(f"--over {item!r}: cannot read the values {text!r}") from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--over {key}: needs at least one value, e.g. --over {key}=V1,V2")
    return key, values


def yaml_axes(section: Any, source: str) -> list[tuple[str, list]]:
    """The YAML `sweep:` section: a mapping of dotted keys to non-empty lists of values."""
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: sweep: must be a mapping of dotted keys to lists, e.g. sweep: {{model.depth: [1, 2, 5]}}")
    axes = []
    for key, values in section.items():
        if not isinstance(values, list):
            raise ConfigError(f"{source}: sweep.{key}: must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{source}: sweep.{key}: the list of values is empty")
        axes.append((str(key), values))
    return axes


def default_depths(depth: int) -> list[int]:
    """1, 2, 4, 8, ... below `depth`, then `depth` itself."""
    out, d = [], 1
    while d < depth:
        out.append(d)
        d *= 2
    return out + [depth]


def validate_axis(base: Config, key: str, values: list, origin: str) -> Axis:
    """Each value through the config's validation; duplicates (after validation) are an error."""
    where = "--over " if origin == "--over" else "sweep: "
    if key in NOT_SWEEPABLE:
        raise ConfigError(f"{where}{key}: cannot be swept (each point is named after the sweep's config)")
    if not values:
        raise ConfigError(f"{where}{key}: the list of values is empty")
    seen = []
    for value in values:
        try:
            cfg = base.replace({key: value})
        except ConfigError as err:
            msg = str(err)
            msg = msg[len("--set "):] if msg.startswith("--set ") else msg
            raise ConfigError(f"{where}{msg}") from None
        normal = get_key(cfg.to_dict(), key)
        if normal in seen:
            raise ConfigError(f"{where}{key}: the value {value!r} appears twice")
        seen.append(normal)
    return Axis(key, tuple(seen), origin)


def get_key(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def merge_axes(base: Config, yaml_items: list[tuple[str, list]], cli_items: list[tuple[str, list]]) -> list[Axis]:
    """YAML axes in order; a command-line axis replaces the YAML one with the same key or is added;
    the default depth axis is added last unless an axis names model.depth."""
    merged: dict[str, tuple[list, str]] = {key: (values, "sweep:") for key, values in yaml_items}
    for key, values in cli_items:
        merged[key] = (values, "--over")
    axes = [validate_axis(base, key, values, origin) for key, (values, origin) in merged.items()]
    if "model.depth" not in merged:
        axes.append(Axis("model.depth", tuple(default_depths(base.model.depth)), "default"))
    seed_axis = next((a for a in axes if a.key == "seed"), None)
    seeds_axis = next((a for a in axes if a.key == "seeds"), None)
    most_seeds = max(seeds_axis.values) if seeds_axis else base.seeds
    if seed_axis is not None and most_seeds > 1:
        where = "--over seed" if seed_axis.origin == "--over" else "sweep: seed"
        raise ConfigError(
            f"{where}: a point runs seeds seed … seed+seeds−1 (seeds: {most_seeds}), so the points would share seeds and "
            f"each row would carry the swept value as its seed; for several seeds use --seeds N (or seeds: N) alone, "
            f"or sweep seed with --seeds 1")
    columns = [a.column for a in axes]
    for col in set(columns):
        if columns.count(col) > 1:
            keys = [a.key for a in axes if a.column == col]
            raise ConfigError(f"--over: {' and '.join(keys)} would share the column {col!r}; sweep only one of them")
    return axes


# ---------------------------------------------------------------------------------------------
# Points and the plan


def fmt_value(value: Any) -> str:
    """A swept value in a variant label: true/false, 1 for 1.0, 0.1, tanh."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if value is None:
        return "null"
    return str(value)


@dataclass(frozen=True)
class Point:
    index: int  # position in the grid: the order of the final CSVs
    variant: str  # e.g. deep50[residual=true,depth=8]
    columns: dict  # swept column -> value
    config: dict  # the point's fully resolved config
    hash: str  # of everything that determines its rows

    @property
    def key(self) -> str:
        return f"{self.index:05d}-{self.hash}"

    @property
    def cost(self) -> float:
        """Relative work (multiply-adds of one forward, times seeds and steps): for scheduling only."""
        m, d, t = self.config["model"], self.config.get("data", {}), self.config.get("train", {})
        width, batch = m.get("width", 64), d.get("batch_size", 32)
        if m.get("block") == "transformer":
            tokens = batch * (d.get("seq_len") or 1)
            per_layer = tokens * (12 * width * width + 2 * (d.get("seq_len") or 1) * width)
        else:
            per_layer = batch * width * width
        steps = 1 + (t.get("steps") or 0) + (t.get("eval_batches") or 0) * 0.1
        return float(m.get("depth", 1)) * per_layer * self.config.get("seeds", 1) * steps


@dataclass
class Plan:
    base: Config
    axes: list[Axis]
    points: list[Point] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [a.column for a in self.axes]

    def config_yaml(self) -> dict:
        """base + axes: `resflow sweep <this config.yaml>` runs the same sweep."""
        data = self.base.to_dict()
        data["sweep"] = {a.key: list(a.values) for a in self.axes}
        return data

    def describe(self) -> str:
        parts = []
        for a in self.axes:
            note = " (default)" if a.origin == "default" else ""
            parts.append(f"{a.key} = {', '.join(fmt_value(v) for v in a.values)}{note}")
        return "; ".join(parts)


def point_hash(config: dict, variant: str, columns: dict) -> str:
    text = json.dumps([__version__, config, variant, columns], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def expand(base: Config, axes: list[Axis]) -> list[Point]:
    points = []
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        overrides = {a.key: v for a, v in zip(axes, combo)}
        try:
            cfg = base.replace(overrides)
        except ConfigError as err:
            what = ", ".join(f"{k}={fmt_value(v)}" for k, v in overrides.items())
            raise ConfigError(f"sweep point {what}: {str(err).removeprefix('--set ')}") from None
        columns = {a.column: v for a, v in zip(axes, combo)}
        variant = f"{base.name}[{','.join(f'{c}={fmt_value(v)}' for c, v in columns.items())}]"
        config = cfg.to_dict()
        points.append(Point(index, variant, columns, config, point_hash(config, variant, columns)))
    return points


def load_base(ref: str | Path, overrides: list[str] | None = None) -> tuple[Config, list[tuple[str, list]]]:
    """A config (path or bundled name) and its YAML `sweep:` axes (validated later, with the CLI's)."""
    path = resolve_config_path(ref)
    data = read_yaml(path)
    section = data.pop("sweep", None)
    data.setdefault("name", path.stem)
    return validate(data, overrides=overrides or [], source=str(path)), yaml_axes(section, str(path))


def make_plan(base: Config, yaml_items=(), cli_axes: list[str] = ()) -> Plan:
    axes = merge_axes(base, list(yaml_items), [parse_over(item) for item in cli_axes])
    return Plan(base, axes, expand(base, axes))


# ---------------------------------------------------------------------------------------------
# Running one point (in a worker: this is where torch is imported)


def run_point(point: Point) -> str:
    """Run one point and return its file's text: the tables' rows, relabelled, as JSON.

    Each table is {"n": rows, "order": columns, "const": {column: value}, "cols": {column: values}}:
    a column with one value in every row (the config's columns, the swept ones) is stored once, so
    the file is a fraction of the size and the parent, which reads every point, parses less.
    """
    from resflow.experiment import run

    result = run(validate(point.config))
    payload = {"format": 2, "index": point.index, "hash": point.hash, "variant": point.variant}  # 2: const/cols tables
    for name in TABLES:
        df = getattr(result, name)
        if df is None:  # no train table when measuring at initialisation
            continue
        rows = {col: df[col].tolist() for col in df.columns}  # = to_dict("list"), without boxing every value in Python
        rows["variant"] = None
        const = {"variant": point.variant}
        for col, value in point.columns.items():
            rows.setdefault(col, None)  # a swept key already among the config columns keeps its place
            const[col] = value
        cols = {}
        for col, values in rows.items():
            if col in const:
                continue
            if _constant(values, df[col].dtype.kind):
                const[col] = values[0]
            else:
                cols[col] = values
        payload[name] = {"n": len(df), "order": list(rows), "const": const, "cols": cols}
    return json.dumps(payload, allow_nan=True)


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
    """A table of a point payload as {column: values}, in CSV order (also the older all-lists form)."""
    if "order" not in part:
        return part
    n, const, cols = part["n"], part["const"], part["cols"]
    return {col: cols[col] if col in cols else [const[col]] * n for col in part["order"]}


# ---------------------------------------------------------------------------------------------
# The results dir: plan, point files, assembly


def point_path(out: Path, point: Point) -> Path:
    return out / POINTS_DIR / f"{point.key}.json"


def failed_path(out: Path, point: Point) -> Path:
    """Where a point that raised leaves its error (removed when a --resume runs it successfully)."""
    return out / POINTS_DIR / f"{point.key}.failed.txt"


def finished(out: Path, plan: Plan) -> set[int]:
    return {p.index for p in plan.points if point_path(out, p).is_file()}


def plan_record(plan: Plan) -> dict:
    return {
        "resflow": __version__,
        "config": plan.config_yaml(),
        "axes": [{"key": a.key, "column": a.column, "values": list(a.values), "origin": a.origin} for a in plan.axes],
        "points": [p.key for p in plan.points],
    }


def prepare_out(out: Path, plan: Plan, resume: bool, force: bool) -> None:
    """Create or check the output dir; fail before any work if it cannot hold this sweep."""
    from resflow.results import check_out_dir, is_results_dir, write_text_atomic

    out = Path(out)
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
    try:
        (out / POINTS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResflowError(f"cannot create the results dir {str(out)!r}: {err.strerror or err}") from None
    write_text_atomic(plan_file, json.dumps(record, indent=1) + "\n")


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
    from resflow.results import write_text_atomic

    write_text_atomic(point_path(out, point), text)


def assemble(out: Path, plan: Plan, parsed: dict[int, dict] | None = None):
    """The tables from the point files, in point order (`parsed`: payloads already read, by index)."""
    parsed = parsed or {}
    payloads = [parsed.get(p.index) or json.loads(point_path(out, p).read_text()) for p in plan.points]
    return tables(payloads, plan.columns)


def tables(payloads: list[dict], columns: list[str]) -> dict:
    """grads/params/summary DataFrames from points' payloads (in the order given), and `train` (None
    unless some point trained: then train.csv's rows of every training point)."""
    import pandas as pd

    from resflow.results import grads_frame, params_frame, summary_frame, train_frame

    rows: dict[str, dict[str, list]] = {name: {} for name in TABLES}
    for payload in payloads:
        for name in TABLES:
            if name not in payload:  # a point that did not train has no train rows
                continue
            table = rows[name]
            part = _columns(payload[name])
            n = len(next(iter(part.values()), []))
            before = len(next(iter(table.values()), [])) if table else 0
            for col in list(table) + [c for c in part if c not in table]:  # ordered: stable CSV columns
                column = table.setdefault(col, [None] * before)
                column.extend(part.get(col, [None] * n))
    frames = {
        "grads": grads_frame(rows["grads"]),
        "params": params_frame(rows["params"]),
        "summary": summary_frame(pd.DataFrame(rows["summary"])),
        "train": train_frame(rows["train"]) if rows["train"] else None,
    }
    for name, df in frames.items():  # the swept columns after the schema's columns, in axis order
        extra = [c for c in columns if df is not None and c in df.columns]
        frames[name] = df[[c for c in df.columns if c not in extra] + extra] if extra else df
    return frames


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepRun:
    """What `run_sweep` reports besides the tables."""

    result: Any  # RunResult
    plan: Plan
    skipped: int  # points found finished (--resume)
    ran: int


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
) -> SweepRun:
    """Run every unfinished point, persist each as it finishes, then write the CSVs."""
    from resflow import backends
    from resflow.results import RunResult, write_files, write_text_atomic

    out = Path(out)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    backends.check_backend(plan.points, backend)  # before the dir is made
    prepare_out(out, plan, resume, force)
    done = finished(out, plan) if resume else set()
    todo = [p for p in plan.points if p.index not in done]
    workers = backends.default_workers() if workers is None else workers
    if on_start is not None:
        on_start(len(plan.points), len(done))

    parsed: dict[int, dict] = {}  # each point's payload, parsed as it arrives (while the others run)

    def save(point: Point, text: str) -> None:
        save_point(out, point, text)
        failed_path(out, point).unlink(missing_ok=True)  # a retried point that now succeeded
        parsed[point.index] = json.loads(text)
        if on_point is not None:
            on_point(point)

    failed: list[tuple[Point, str]] = []

    def fail(point: Point, error: str) -> None:
        failed.append((point, error))
        write_text_atomic(failed_path(out, point), f"{point.variant}: {error}\n")
        if on_point is not None:
            on_point(point)

    try:
        if todo:
            backends.execute(todo, save, workers=workers, backend=backend, ray_address=ray_address, fail=fail)
    except KeyboardInterrupt as err:
        from resflow.signals import exit_code, signal_name

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

    frames = assemble(out, plan, parsed)
    meta = dict(
        kind="sweep",
        resflow=__version__,
        torch=getattr(sys.modules.get("torch"), "__version__", None),  # None when only Ray workers imported it
        python=platform.python_version(),
        platform=platform.platform(),
        axes=[{"key": a.key, "column": a.column, "values": list(a.values)} for a in plan.axes],
        points=len(plan.points),
        resumed_points=len(done),
        workers=workers,
        backend=backend,
        started=started.isoformat(timespec="seconds"),
        wall_time_s=round(time.perf_counter() - t0, 6),
        command=" ".join(sys.argv),
    )
    result = RunResult(grads=frames["grads"], params=frames["params"], summary=frames["summary"],
                       config=plan.config_yaml(), meta=meta, path=out, train=frames["train"])
    write_files(result, out, processes=workers if backend == "local" else 1)  # the workers' cores are free now
    return SweepRun(result, plan, skipped=len(done), ran=len(todo))


def sweep_columns(meta: dict) -> list[str]:
    """The swept columns recorded in a sweep's meta.json."""
    return [a["column"] for a in meta.get("axes", [])]


def unfinished_sweep(path: Path) -> tuple[int, int] | None:
    """(finished, total) points if `path` holds a sweep whose CSVs are not written yet."""
    plan_file = Path(path) / PLAN_FILE
    if not plan_file.is_file() or (Path(path) / "summary.csv").is_file():
        return None
    try:
        keys = json.loads(plan_file.read_text()).get("points", [])
    except (OSError, ValueError):
        return None
    have = {f.stem for f in (Path(path) / POINTS_DIR).glob("*.json")}
    return len([k for k in keys if k in have]), len(keys)

