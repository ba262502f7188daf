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

import functools
import json
import math
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

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
    a column with one value in every row (the config's columns, the swept ones) is stored once, so
    the file is a fraction of the size and the parent, which reads every point, parses less. `allow_code`: the sweep's opt-in for a
    module:callable factory, decided once in the parent and sent with the task.
    """
    from resflow.experiment import run

    result = run(validate(point.config), allow_code=allow_code)
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


def read_point(out: Path, point: Point) -> dict | None:
    """The payload of a finished point's file, or None if the file is not a whole, valid payload of
    this point (truncated, random bytes, another point's): such a file is not trusted, but re-run."""
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
    for name in TABLES:
        if name not in payload:
            continue
        part = payload[name]
        try:
            columns = _columns(part)
            n = part["n"] if "n" in part else len(next(iter(columns.values()), []))
            if isinstance(n, bool) or not isinstance(n, int):
                return None
            if not all(isinstance(v, list) and len(v) == n and _well_typed(col, v) for col, v in columns.items()):
                return None
        except (KeyError, TypeError, AttributeError):
            return None
    return payload


def _const(part) -> dict:
    const = part.get("const") if isinstance(part, dict) else None
    return const if isinstance(const, dict) else {}


SCALARS = (str, int, float, bool, type(None))  # what a column of a point file holds (a CSV cell)
NUMBERS = (  # columns that hold numbers in every table that has them (the keys, then the measures)
    {"seed", "step", "layer", "depth", "width", "init_scale"}
    | {"input_grad_norm", "activation_rms", "param_grad_norm", "grad_norm", "value_norm", "update_ratio", "movement"}
    | {"loss", "eval_loss", "grad_norm_total", "lr", "wall_time_s", "task_floor", "task_baseline"}
    | {"grad_first", "grad_last", "grad_ratio", "log10_grad_ratio", "gain_per_layer", "log10_ratio_sd", "ratio_q25"}
    | {"ratio_q75"}
)
KEYS = {"seed", "step", "layer"}  # never empty


def _well_typed(column: str, values: list) -> bool:
    """A column of a point file as resflow writes it: CSV cells (no lists or mappings); a number
    column's values numbers (a key's never missing), so that a hand-edited or crafted file is run
    again on --resume rather than failing the assembly or being written into the CSVs."""
    if column in NUMBERS:
        allowed = (int, float) if column in KEYS else (int, float, type(None))
        return all(isinstance(v, allowed) and not isinstance(v, bool) for v in values)
    return all(isinstance(v, SCALARS) for v in values)


def read_finished(out: Path, plan: Plan, parsed: dict[int, dict]) -> tuple[set[int], list[Point]]:
    """The points whose files hold valid payloads (parsed into `parsed`), and the points whose files
    were damaged: those files are removed, so the points run again."""
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
            parsed[point.index] = payload
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


def assemble(out: Path, plan: Plan, parsed: dict[int, dict] | None = None):
    """The tables from the point files, in point order (`parsed`: payloads already read, by index)."""
    parsed = parsed or {}
    payloads = [parsed.get(p.index) or json.loads(point_path(out, p).read_text()) for p in plan.points]
    return tables(payloads, plan.columns)


def tables(payloads: list[dict], columns: list[str]) -> dict:
    """grads/params/summary DataFrames from points' payloads (in the order given), and `train` (None
    unless some point trained: then train.csv's rows of every training point)."""
    import pandas as pd

    from resflow.results.tables import grads_frame, params_frame, summary_frame, train_frame

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
    from resflow._sys import workers as backends
    from resflow._sys.code import check, code_allowed
    from resflow.errors import EnvironmentFault
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
    from resflow._sys import workers as backends
    from resflow._sys.files import write_text_atomic
    from resflow.results.files import check_format, write_files
    from resflow.results.meta import run_meta
    from resflow.results.tables import RunResult

    check_format(fmt)  # before any work
    out = Path(out)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    prepare_out(out, plan, resume, force)
    parsed: dict[int, dict] = {}  # each point's payload: those found finished, then each as it arrives
    done, damaged = read_finished(out, plan, parsed) if resume else (set(), [])
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
        parsed[point.index] = json.loads(text)
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

    missing = [p for p in plan.points if p.index not in parsed]
    for point in missing:  # (all are parsed by now: finished ones were read and checked above)
        payload = read_point(out, point)
        if payload is None:
            raise ResflowError(
                f"{str(point_path(out, point))!r} is damaged; rerun with: {resume_hint or 'the same command plus --resume'}"
            )
        parsed[point.index] = payload
    frames = assemble(out, plan, parsed)
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
    result = RunResult(
        grads=frames["grads"],
        params=frames["params"],
        summary=frames["summary"],
        config=plan.config_yaml(),
        meta=meta,
        path=out,
        train=frames["train"],
    )
    write_files(result, out, fmt=fmt)
    return SweepRun(result, plan, skipped=len(done), ran=len(todo))


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
