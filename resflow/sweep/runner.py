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
from resflow.sweep.points import (
    CHUNK_ROWS,
    POINTS_DIR,
    STREAMED,
    TABLES,
    Assembly,
    NotStreamable,
    chunk_frame,
    damaged_error,
    decoded_part,
    encode_point,
    failed_path,
    finished,
    point_path,
    read_point,
    table_frame,
    tables,
)

PLAN_FILE = "plan.json"  # written first: marks a (possibly unfinished) sweep dir and what it will hold


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


# ---------------------------------------------------------------------------------------------
# Streaming assembly: the final tables written from the point files, a chunk of points at a time


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
                        frame = chunk_frame(parts, *layouts[name])
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
            payload[name] = decoded_part(payload[name])
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
