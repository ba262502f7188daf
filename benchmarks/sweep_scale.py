"""Sweeps at scale (issue 29): wall time, peak memory and output sizes of `resflow sweep` at 1,000,
10,000 and 100,000 runs, this checkout beside a baseline checkout (today's main), in one run.

    python -m benchmarks.sweep_scale --baseline /work/main                # 1k and 10k, CSV and Parquet
    python -m benchmarks.sweep_scale --sizes 100k --sides new             # the 100,000-run sweep
    python -m benchmarks.sweep_scale ... --write-docs                     # the table into docs/performance.md

Each sweep is one `python -m resflow sweep deep50 ... --workers 2 --no-plots` process of the checkout
named (PYTHONPATH, working directory), timed from launch to exit. Memory: the resflow process's own
peak RSS (its rusage, exact), and the peak over 0.1 s samples of the whole process tree (the parent
and its workers) summed as RSS (which counts the pages they share once per process) and as PSS (each
shared page split between its sharers: the memory the tree really holds). The load average is read
before each sweep: the machine may be shared, and a sweep's wall time grows with it.
Shapes (MLP width 64, tanh, depths 1..100):
  1k    100 depths x 10 seeds
  10k   100 depths x 10 init scales x 10 seeds
  100k  100 depths x 10 init scales x 100 seeds
  tiny  3 depths x 2 seeds (tests/test_benchmarks.py: does it still run)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
DEPTHS = ",".join(str(d) for d in range(1, 101))
SCALES = "0.5,0.6,0.7,0.8,0.9,1,1.1,1.2,1.3,1.4"
SHAPES = {
    "1k": (["--over", f"model.depth={DEPTHS}"], 10),
    "10k": (["--over", f"model.depth={DEPTHS}", "--over", f"model.init.scale={SCALES}"], 10),
    "100k": (["--over", f"model.depth={DEPTHS}", "--over", f"model.init.scale={SCALES}"], 100),
    "tiny": (["--over", "model.depth=1,2,3"], 2),  # does the benchmark still run (the test suite's)
}
DOCS_START, DOCS_END = "<!-- sweep-scale:start -->", "<!-- sweep-scale:end -->"


def sweep_command(size: str, fmt: str, out: Path) -> list[str]:
    axes, seeds = SHAPES[size]
    return [
        sys.executable,
        "-m",
        "resflow",
        "sweep",
        "deep50",
        *axes,
        "--seeds",
        str(seeds),
        "--set",
        "model.width=64",
        "--workers",
        "2",
        "--no-plots",
        "--format",
        fmt,
        "--out",
        str(out),
    ]


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return pids


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.split(":")[0] in ("Rss", "Pss")}
        return fields.get("Rss", 0), fields.get("Pss", 0)
    except (OSError, ValueError, IndexError):
        return 0, 0


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) one live process has used so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(cmd: list[str], checkout: Path) -> dict:
    """Run `cmd` with `checkout` first on the path; its wall time and peak memory (see the module doc),
    its CPU seconds: the whole tree's (its rusage, or the sum of each process's last reading if more:
    the rusage counts only the descendants that were waited for, which a forkserver's workers may not
    be) and the resflow process's own (sampled every 0.1 s: its last reading before it exits)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    peaks = {"tree_rss": 0, "tree_pss": 0, "parent_cpu": 0.0}
    cpu_by_pid: dict[int, float] = {}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = pss = 0
            for pid in _tree(proc.pid):
                r, p = _memory(pid)
                rss, pss = rss + r, pss + p
                cpu_by_pid[pid] = max(cpu_by_pid.get(pid, 0.0), _cpu(pid))
            peaks["tree_rss"], peaks["tree_pss"] = max(peaks["tree_rss"], rss), max(peaks["tree_pss"], pss)
            peaks["parent_cpu"] = max(peaks["parent_cpu"], _cpu(proc.pid))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    cpu = max(usage.ru_utime + usage.ru_stime, sum(cpu_by_pid.values()))  # (the rusage misses a forkserver's workers)
    return dict(wall=wall, parent_rss=usage.ru_maxrss * 1024, load=load, cpu=cpu, **peaks)


def sizes_of(out: Path) -> dict[str, int]:
    """Bytes of each table file and of points/ (all its files)."""
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.suffix in (".csv", ".parquet")}
    points = out / "points"
    sizes["points/"] = sum(f.stat().st_size for f in points.iterdir()) if points.is_dir() else 0
    sizes["points/ files"] = len(list(points.iterdir())) if points.is_dir() else 0
    return sizes


def same_tables(a: Path, b: Path) -> bool:
    """The CSVs of two sweeps byte for byte, or (Parquet) equal frames."""
    import pandas as pd

    for f in sorted(a.iterdir()):
        if f.suffix == ".csv" and f.read_bytes() != (b / f.name).read_bytes():
            return False
        if f.suffix == ".parquet":
            try:
                pd.testing.assert_frame_equal(pd.read_parquet(f), pd.read_parquet(b / f.name))
            except AssertionError:
                return False
    return True


def run(sizes: list[str], formats: list[str], sides: dict[str, Path], repeats: int, record=None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="resflow-sweep-scale-") as tmp:
        for size in sizes:
            for fmt in formats:
                outs = {}
                for rep in range(repeats):
                    for side, checkout in sides.items():  # interleaved: a load change hits both sides alike
                        out = Path(tmp) / f"{size}-{fmt}-{side}"
                        if out.exists():
                            shutil.rmtree(out)
                        m = measure(sweep_command(size, fmt, out), checkout)
                        m.update(size=size, format=fmt, side=side, rep=rep, checkout=str(checkout), sizes=sizes_of(out))
                        print(_line(m), file=sys.stderr, flush=True)
                        rows.append(m)
                        outs[side] = out
                        if record is not None:
                            record(rows)
                if len(outs) == 2:
                    same = same_tables(*outs.values())
                    for m in rows[-len(sides) * repeats :]:
                        m["same_tables"] = same
                    if record is not None:
                        record(rows)
                for out in outs.values():
                    shutil.rmtree(out, ignore_errors=True)
    return rows


# ---------------------------------------------------------------------------------------------
# The serial tail alone: `--resume` of a sweep whose points are all finished (assembly, tables, report)

BATCH_AXIS = ["--over", "data.batch_size=16,20,24,28,32,36,40,44,48,52"]  # x10 points: the 100k-run (10,000 x 10 seeds) shape
TAIL_SHAPES = {"10k": [], "100k": BATCH_AXIS}  # added to the 10k shape


def _plan(extra: list[str]):
    from resflow.sweep.plan import load_base, make_plan

    axes, seeds = SHAPES["10k"]
    base, yaml_axes = load_base("deep50", [f"seeds={seeds}", "model.width=64"])
    over = [a for a in axes + extra if a != "--over"]
    return make_plan(base, yaml_axes, over)


def make_points(source: Path, dest: Path, extra: list[str]) -> None:
    """A finished sweep of the 10k shape plus `extra` axes in `dest` (plan.json, points/ in this
    checkout's format), each point's rows those of the `source` point (a finished 10k sweep, any
    point format) with the same depth and scale, relabelled: the values repeat, the sizes are real."""
    import pandas as pd

    from resflow.sweep import points, runner

    src_plan, plan = _plan([]), _plan(extra)
    per = len(plan.points) // len(src_plan.points)
    shutil.rmtree(dest, ignore_errors=True)
    runner.prepare_out(dest, plan, resume=False, force=False)
    frames, read = {}, None
    for point in plan.points:
        src = src_plan.points[point.index // per]
        if read != src.index:  # (each source point's relabelled copies are consecutive)
            payload = runner.read_point(source, src)
            if payload is None:
                raise SystemExit(f"{source}: point {src.key} is missing or damaged")
            frames = {name: pd.DataFrame(points.part_columns(payload[name])) for name in runner.TABLES if name in payload}
            read = src.index
        runner.save_point(dest, point, runner.encode_point(point, frames))


def tail_command(extra: list[str], fmt: str, out: Path) -> list[str]:
    cmd = sweep_command("10k", fmt, out)
    at = cmd.index("--seeds")
    return [*cmd[:at], *extra, *cmd[at:], "--resume"]


def run_tail(
    source: Path, sizes: list[str], formats: list[str], sides: dict[str, Path], work: Path | None = None, record=None
) -> list[dict]:
    """Time `--resume` with every point finished: the baseline on a copy of `source` (its own point
    files), this checkout on the same rows in its own format, at 10k and (relabelled, this checkout
    only: the baseline holds every row in memory) 100k runs."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="resflow-sweep-tail-") as tmp:
        tmp = work or tmp  # `work`: kept, and its points reused by the next run
        dirs = {}
        for size in sizes:
            dirs[("new", size)] = Path(tmp) / f"{size}-new"
            if _complete(dirs[("new", size)]):
                continue
            t0 = time.perf_counter()
            make_points(source, dirs[("new", size)], TAIL_SHAPES[size])
            print(f"made the {size} points in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if "old" in sides:
            dirs[("old", "10k")] = Path(tmp) / "10k-old"
            if not _complete(dirs[("old", "10k")]):
                shutil.copytree(source, dirs[("old", "10k")])
        for fmt in formats:
            for size in sizes:
                for side, checkout in sides.items():
                    if (side, size) not in dirs:
                        continue
                    out = dirs[(side, size)]
                    for f in out.iterdir():  # as a sweep stopped after its last point
                        if f.is_file() and f.name != "plan.json":
                            f.unlink()
                    m = measure(tail_command(TAIL_SHAPES[size], fmt, out), checkout)
                    m.update(
                        size=f"{size} (--resume: the tail)",
                        format=fmt,
                        side=side,
                        rep=0,
                        checkout=str(checkout),
                        sizes=sizes_of(out),
                    )
                    print(_line(m), file=sys.stderr, flush=True)
                    rows.append(m)
                    if record is not None:
                        record(rows)
    return rows


def _complete(out: Path) -> bool:
    """A sweep dir whose plan's points all have their files (made by an earlier run)."""
    try:
        keys = json.loads((out / "plan.json").read_text())["points"]
    except (OSError, ValueError, KeyError):
        return False
    have = {f.stem for f in (out / "points").glob("*.json")}
    return all(k in have for k in keys)


# ---------------------------------------------------------------------------------------------
# A worker's point, part by part: where the CPU of a point goes (each side's code, in its own process)

PARTS = {  # what a point's CPU is spent on: (module, attribute)s wrapped where the point's code looks them up
    # (resflow.results.assemble: where the frames and the summary are made since the one assembly path)
    "measure (forward, backward, norms, the seeds' init draws)": [("resflow.measure.batched", "measure_seeds")],
    "summarize": [("resflow.experiment", "summarize"), ("resflow.results.assemble", "summarize")],
    # (looked up when `overlay(prediction)` makes the assembly's overlay function)
    "theory overlay": [("resflow.theory.overlay", "add_prediction")],
    "tables (grads, params, summary frames)": [
        (module, name)
        for module in ("resflow.experiment", "resflow.results.assemble")
        for name in ("grads_frame", "params_frame", "summary_frame")
    ],
    "point file (encode)": [("resflow.sweep.runner", "encode_point")],
}


def breakdown_child(n: int) -> dict:
    """CPU ms per point of `n` points of the 10k shape as one of the 2 pool workers meets them: the
    pool's order (longest first, so an init-scale group's points come together), every other point
    (the other worker takes the rest), over n // 5 depths spread from 1 to 100; one torch thread,
    after one point and `gc.freeze()` as a forked pool worker (the parent froze its heap): the whole
    point and each of PARTS; the code is whichever resflow is first on the path."""
    import gc
    import importlib

    import torch

    from resflow.sweep import runner

    torch.set_num_threads(1)
    plan = _plan([])
    by_cost = sorted(plan.points, key=lambda p: getattr(p, "cost", 0.0), reverse=True)  # (the pool's order)
    groups = max(1, n // 5)
    depths = {1 + round(99 * k / max(1, groups - 1)) for k in range(groups)}
    points = [p for p in by_cost if p.config["model"]["depth"] in depths][::2][:n]
    spent: dict[str, float] = {}

    def wrap(label: str, module, name: str) -> None:
        inner = getattr(module, name)

        def timed(*args, **kwargs):
            t = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - t

        setattr(module, name, timed)

    for label, places in PARTS.items():
        for module_name, name in places:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                continue
            if hasattr(module, name):  # (a part another version of the code lacks is left out: in "the rest")
                wrap(label, module, name)
    runner.run_point(points[-1])
    gc.freeze()
    spent.clear()
    t = time.process_time()
    for point in points:
        runner.run_point(point)
    total = time.process_time() - t
    out = {label: 1000 * v / len(points) for label, v in spent.items()}
    out["the rest (config, rows, Python)"] = 1000 * (total - sum(spent.values())) / len(points)
    out["the whole point"] = 1000 * total / len(points)
    return out


def run_breakdown(n: int, sides: dict[str, Path]) -> dict:
    """`breakdown_child` in a fresh process per side (its checkout first on the path), interleaved."""
    found = {}
    for side, checkout in sides.items():
        env = dict(os.environ, PYTHONPATH=str(checkout))
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--breakdown-child", str(n)], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"breakdown ({side}) failed:\n{done.stderr[-2000:]}")
        found[side] = dict(json.loads(done.stdout.strip().splitlines()[-1]), load=os.getloadavg()[0])
        print(f"breakdown {side}: {found[side]}", file=sys.stderr, flush=True)
    return found


def breakdown_table(found: dict) -> str:
    sides = list(found)
    known = [*PARTS, "the rest (config, rows, Python)", "the whole point"]
    labels = [k for k in known if any(k in found[side] for side in sides)]
    lines = [
        "| a point of the 10k sweep (10 seeds), CPU per point | " + " | ".join(sides) + " |",
        "|---|" + "---|" * len(sides),
    ]
    for label in labels:
        lines.append(
            f"| {label} | " + " | ".join(f"{found[s][label]:.1f} ms" if label in found[s] else "-" for s in sides) + " |"
        )
    lines.append("| load (1 min) | " + " | ".join(f"{found[s]['load']:.1f}" for s in sides) + " |")
    return "\n".join(lines)


class _Idle:
    """A point of `pool_child`: no work, a cost for the pool's longest-first order."""

    def __init__(self, index: int):
        self.index, self.cost = index, index % 7


def _idle_task(point) -> str:
    time.sleep(0.005)  # (a point's time: the results come back one at a time, as a sweep's do)
    return "x"


def pool_child(n: int) -> dict:
    """CPU seconds the pool's parent spends collecting `n` points' results (2 workers, 5 ms points)."""
    from resflow.executors import pool

    t = time.process_time()
    pool.execute([_Idle(i) for i in range(n)], _idle_task, lambda point, text: None, workers=2)
    return {"parent_cpu": time.process_time() - t, "points": n}


def run_pool(n: int, sides: dict[str, Path]) -> dict:
    """`pool_child` in a fresh process per side (its checkout first on the path)."""
    found = {}
    for side, checkout in sides.items():
        env = dict(os.environ, PYTHONPATH=str(checkout))
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--pool-child", str(n)],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"pool ({side}) failed:\n{done.stderr[-2000:]}")
        found[side] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"pool {side}: {found[side]['parent_cpu']:.2f} s parent CPU for {n} points", file=sys.stderr, flush=True)
    return found


def run_writes(total: int = 200 << 20, chunk: int = 10 << 20) -> dict:
    """Seconds to write `total` bytes into a new file in `chunk`-byte write(2) calls (a streamed
    table's chunk, written whole), then in resflow.results.files.write_pieces's pieces: why the
    tables are written in pieces."""
    from resflow._sys.files import write_all
    from resflow.results.files import WRITE_PIECE, write_pieces

    data = os.urandom(1 << 20) * (chunk >> 20)
    found = {}
    with tempfile.TemporaryDirectory(prefix="resflow-writes-") as tmp:
        for label, write in ((f"{chunk >> 20} MB per write", write_all), (f"{WRITE_PIECE >> 20} MB pieces", write_pieces)):
            fd = os.open(Path(tmp) / "w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            t = time.perf_counter()
            for _ in range(total // chunk):
                write(fd, data)
            found[label] = time.perf_counter() - t
            os.close(fd)
    print(", ".join(f"{k}: {v:.2f} s" for k, v in found.items()) + f" for {total >> 20} MB", file=sys.stderr)
    return found


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _line(m: dict) -> str:
    return (
        f"{m['size']} {m['format']} {m['side']}: {m['wall']:.1f} s wall (load {m['load']:.1f}, cpu {m['cpu']:.0f} s, "
        f"resflow process {m.get('parent_cpu', 0):.0f} s), "
        f"peak RSS {_mb(m['parent_rss'])}, tree RSS {_mb(m['tree_rss'])}, tree PSS {_mb(m['tree_pss'])}; "
        + ", ".join(f"{k} {_mb(v) if 'files' not in k else v}" for k, v in m["sizes"].items())
    )


def table(rows: list[dict]) -> str:
    """A markdown table: one line per size, format and side (median wall over repeats). CPU ÷ 2: the
    tree's CPU seconds over the 2 cores, the wall time the same work would take on an idle 2-core
    machine if it all ran in parallel; workers per point: the CPU the tree used outside the resflow
    process (its workers) over the points run."""
    lines = [
        "| sweep | format | code | wall | load (1 min) | CPU (tree) | CPU ÷ 2 | CPU (resflow process) | workers per point "
        "| peak RSS (resflow) | tree RSS / PSS | tables | points/ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for m in rows:
        groups.setdefault((m["size"], m["format"], m["side"]), []).append(m)
    for (size, fmt, side), ms in groups.items():
        wall = statistics.median(m["wall"] for m in ms)
        last = ms[-1]
        tables = sum(v for k, v in last["sizes"].items() if not k.startswith("points/"))
        same = "" if "same_tables" not in last else (" (same tables)" if last["same_tables"] else " (TABLES DIFFER)")
        loads = ", ".join(f"{m['load']:.1f}" for m in ms)
        rss, tree_rss, tree_pss = (max(m[k] for m in ms) for k in ("parent_rss", "tree_rss", "tree_pss"))
        points = f"{_mb(last['sizes']['points/'])} in {last['sizes']['points/ files']} files"
        cpu = statistics.median(m["cpu"] for m in ms)
        own, per_point = "-", "-"
        if all("parent_cpu" in m for m in ms):
            own_cpu = statistics.median(m["parent_cpu"] for m in ms)
            own = f"{own_cpu:.1f} s"
            if "--resume" not in size and last["sizes"]["points/ files"]:  # (a whole sweep: every point ran)
                per_point = f"{(cpu - own_cpu) / last['sizes']['points/ files']:.3f} s"
        lines.append(
            f"| {size} runs | {fmt} | {side}{same} | {wall:.1f} s | {loads} | {cpu:.1f} s | {cpu / 2:.1f} s | {own} | {per_point} "
            f"| {_mb(rss)} | {_mb(tree_rss)} / {_mb(tree_pss)} | {_mb(tables)} | {points} |"
        )
    return "\n".join(lines)


def write_docs(text: str, path: Path = ROOT / "docs" / "performance.md") -> None:
    doc = path.read_text()
    start, end = doc.index(DOCS_START) + len(DOCS_START), doc.index(DOCS_END)
    path.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k", help="comma-separated: 1k, 10k, 100k")
    parser.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with (today's main)")
    parser.add_argument("--sides", default="", help="old,new (default: both when --baseline is given)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT / "sweep_scale.json")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/performance.md")
    parser.add_argument("--work", type=Path, help="--tail-from's working dir (kept; its points reused) [a temp dir]")
    parser.add_argument("--docs-from", default="", help="only write docs/performance.md from these recorded JSON files")
    parser.add_argument(
        "--tail-from",
        type=Path,
        help="a finished 10k sweep (made by the baseline): time only --resume of finished sweeps (sizes 10k, 100k)",
    )
    parser.add_argument("--breakdown", type=int, default=0, help="also: CPU per point, part by part, over this many points")
    parser.add_argument("--breakdown-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--writes", action="store_true", help="only: 200 MB written in 10 MB calls, then in pieces")
    parser.add_argument("--pool", type=int, default=0, help="only: the pool parent's CPU collecting this many points")
    parser.add_argument("--pool-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writes:
        run_writes()
        return 0
    if args.pool_child:
        print(json.dumps(pool_child(args.pool_child)))
        return 0
    if args.pool:
        run_pool(args.pool, {"old": args.baseline, "new": ROOT} if args.baseline else {"new": ROOT})
        return 0
    if args.breakdown_child:
        print(json.dumps(breakdown_child(args.breakdown_child)))
        return 0
    sides = {"old": args.baseline, "new": ROOT} if args.baseline else {"new": ROOT}
    if args.sides:
        sides = {k: v for k, v in sides.items() if k in args.sides.split(",")}
    sizes, formats = [s for s in args.sizes.split(",") if s], args.formats.split(",")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = dict(when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cpus=os.cpu_count(), argv=sys.argv[1:], commit=commit)
    outs = [Path(p) for p in args.docs_from.split(",")] if args.docs_from else [args.out]
    if not args.docs_from:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.out.read_text()) if args.out.is_file() else []

        found = run_breakdown(args.breakdown, sides) if args.breakdown else None

        def record(rows: list[dict]) -> None:  # after every sweep: an interrupted run keeps what it measured
            done = {"meta": meta, "rows": rows, **({"breakdown": found} if found else {})}
            args.out.write_text(json.dumps([*previous, done], indent=1) + "\n")

        if args.breakdown and not args.sizes:
            rows = []
        elif args.tail_from:
            rows = run_tail(args.tail_from, sizes, formats, sides, args.work, record)
        else:
            rows = run(sizes, formats, sides, args.repeats, record)
        record(rows)
        if rows:
            print(table(rows))
        if found:
            print(breakdown_table(found))
    if args.write_docs or args.docs_from:
        parts = []
        for out in outs:
            for recorded in json.loads(out.read_text()):
                m = recorded["meta"]
                head = f"`python -m benchmarks.sweep_scale {' '.join(m['argv'])}` at commit {m['commit']}, {m['when']}, {m['cpus']} cores:"
                tables = [table(recorded["rows"])] if recorded["rows"] else []
                if recorded.get("breakdown"):
                    tables.append(breakdown_table(recorded["breakdown"]))
                parts.append(head + "\n\n" + "\n\n".join(tables))
        write_docs("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
