"""resflow's performance targets (issue 8), each measured against the baseline it names, in the same run.

    python -m benchmarks            # the full table (several minutes on 2 busy cores)
    python -m benchmarks --quick    # small sizes, few repeats: checks the benchmarks still run
    python -m benchmarks --only recording,cli
    python -m benchmarks --device cpu   # the models on the CPU even where a GPU is present

`--device` [auto: CUDA if present] is where the recording, seeds and depth benchmarks put their
models (timers then wait for the device); the sweep and CLI benchmarks measure CPU processes (one
torch thread per worker, process launches) and run on the CPU whatever it says.
Prints a table (target, measured, threshold, pass/fail) and writes benchmarks/out/results.{json,csv}.
Ratios are medians of interleaved repetitions (both sides run alternately, so a busy machine slows
both alike). Timings are never asserted in tests; `--quick` is what the test suite runs.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


@dataclass
class Row:
    target: str
    measured: float
    unit: str
    threshold: str  # e.g. "<= 1.10"
    passed: bool | None  # None: reported, no threshold
    detail: str = ""


def interleaved(fns: dict, repeats: int, warmup: int = 2, sync=None) -> dict[str, float]:
    """Median seconds of each callable, run alternately `repeats` times; `sync()` (a device's
    synchronize) runs before each call's clock stops, so queued device work is counted."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for f in fns.values():
            f()
    sync()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def device_sync(device):
    """What waits for `device`'s queued work: CUDA's synchronize, or nothing on the CPU."""
    import torch

    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def faults_per_step(fn, steps: int = 10) -> float:
    """Median minor page faults of one call (the allocator's doing: resflow/allocator.py)."""
    import resource

    counts = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts)


def env() -> dict:
    """Child processes see this checkout first (as the tests do)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


# ---------------------------------------------------------------------------------------------
# 1. Recording overhead


def _mlp_steps(depth: int, width: int, batch: int, device):
    import torch

    from benchmarks.transformer_overhead import step_pair
    from resflow.config.loading import load_config
    from resflow.experiment import prepare_seed

    cfg = load_config({"device": device.type, "model": {"depth": depth, "width": width}, "data": {"batch_size": batch}})
    model, x, loss_fn = prepare_seed(cfg, 0, device)
    bare, recorded = step_pair(model, x, loss_fn)

    def module_hooks():  # the alternative: full backward hooks on every block, norms per call
        model.zero_grad(set_to_none=True)
        x.grad = None
        norms = []
        hook = lambda mod, gin, gout: norms.append(torch.linalg.vector_norm(gin[0]))  # noqa: E731
        handles = [b.register_full_backward_hook(hook) for b in model.blocks]
        try:
            loss_fn(model(x)).backward()
            torch.stack(norms).tolist()
        finally:
            for h in handles:
                h.remove()

    def minimal_hooks():  # the least a Python-hook recorder can do: the same norms, no bookkeeping
        model.zero_grad(set_to_none=True)
        x.grad = None
        norms, tensor_hooks, measured = [], [], set()

        def on_grad(block, g):
            lin = block.linear
            grads = [p.grad for p in (lin.weight, lin.bias) if p is not None and p.grad is not None]
            if grads:
                measured.add(block)
            norms.extend(torch._foreach_norm([g, *grads]))

        def on_forward(block, args):
            lin = block.linear
            norms.extend(torch._foreach_norm([args[0].detach(), *(p.detach() for p in (lin.weight, lin.bias) if p is not None)]))
            tensor_hooks.append(args[0].register_hook(partial(on_grad, block)))

        handles = [b.register_forward_pre_hook(on_forward) for b in model.blocks]
        try:
            loss_fn(model(x)).backward()
            late = [p.grad for b in model.blocks if b not in measured for p in (b.linear.weight, b.linear.bias) if p is not None]
            if late:  # block 0's, not written yet when its (leaf) input's hook fired: as collect() does
                norms.extend(torch._foreach_norm(late))
            torch.stack(norms).tolist()
        finally:
            for h in handles + tensor_hooks:
                h.remove()

    def no_hooks():  # the same norms taken after the backward with no hooks at all: the floor of any recorder
        model.zero_grad(set_to_none=True)
        x.grad = None
        inputs, h = [], x
        for block in model.blocks:
            inputs.append(h)
            h = block(h)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss_fn(model.final_norm(h)), [*inputs, *params])
        detached = [t.detach() for t in inputs]
        torch.stack(torch._foreach_norm([*detached, *grads, *(p.detach() for p in params)])).tolist()

    return bare, recorded, module_hooks, minimal_hooks, no_hooks


def bench_recording(quick: bool, device) -> list[Row]:
    depth, width, batch = (10, 64, 16) if quick else (50, 256, 64)
    bare, recorded, module_hooks, minimal_hooks, no_hooks = _mlp_steps(depth, width, batch, device)
    sync = device_sync(device)
    t = interleaved(
        {"bare": bare, "recorded": recorded, "module_hooks": module_hooks, "minimal": minimal_hooks, "no_hooks": no_hooks},
        3 if quick else 40,
        sync=sync,
    )
    faults = {k: faults_per_step(f) for k, f in (("bare", bare), ("recorded", recorded))}
    ours, hand = t["recorded"] / t["bare"], t["minimal"] / t["bare"]
    rows = [  # judged against the hand-written hooks measured beside it, not a fixed number
        Row(
            "recording, MLP: resflow's recorder",
            ours,
            "x bare fwd+bwd",
            "<= hand-written + 0.01",
            ours - hand <= 0.01,
            f"depth {depth} width {width} batch {batch}: bare {t['bare'] * 1e3:.2f} ms, recorded {t['recorded'] * 1e3:.2f} ms "
            f"({ours - hand:+.3f} vs the hand-written hooks); page faults/step {faults['bare']:.0f} and {faults['recorded']:.0f}",
        ),
        Row(
            "recording, MLP: hand-written hooks, the same work",
            hand,
            "x bare fwd+bwd",
            "-",
            None,
            f"{t['minimal'] * 1e3:.2f} ms; the recorder's norms from two bare hooks per block, no bookkeeping, no Record",
        ),
        Row(
            "recording, MLP: the same norms after backward, no hooks (the floor)",
            t["no_hooks"] / t["bare"],
            "x bare fwd+bwd",
            "-",
            None,
            f"{t['no_hooks'] * 1e3:.2f} ms; every block's input kept, autograd.grad, one fused norm call",
        ),
        Row(
            "full module backward hooks, MLP (for comparison)",
            t["module_hooks"] / t["bare"],
            "x bare fwd+bwd",
            "-",
            None,
            f"{t['module_hooks'] * 1e3:.2f} ms; input grad norms only",
        ),
    ]
    from benchmarks.transformer_overhead import reference_config, reference_step

    overrides = ["model.depth=2", "model.width=32", "model.heads=2"] if quick else []
    cfg = reference_config("pre-norm", [*overrides, f"device={device.type}"])
    bare, recorded = reference_step(cfg)
    t = interleaved({"bare": bare, "recorded": recorded}, 3 if quick else 30, sync=sync)
    m = cfg.model
    rows.append(
        Row(
            "recording, transformer: resflow's recorder",
            t["recorded"] / t["bare"],
            "x bare fwd+bwd",
            "-",
            None,
            f"pre-norm {m.depth} blocks width {m.width}: bare {t['bare'] * 1e3:.2f} ms, recorded {t['recorded'] * 1e3:.2f} ms",
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Batched seeds


def bench_seeds(quick: bool, device) -> list[Row]:
    import torch

    from resflow.config.loading import load_config
    from resflow.experiment import measure_seed, run
    from resflow.measure import batched

    depth, seeds = (10, 4) if quick else (50, 16)
    cfg = load_config({"device": device.type, "seeds": seeds, "model": {"depth": depth, "width": 64}, "data": {"batch_size": 32}})
    singles = [cfg.replace({"seed": s, "seeds": 1}) for s in cfg.seed_list]
    sequential = lambda: [measure_seed(cfg, s, device) for s in cfg.seed_list]  # noqa: E731

    def cold(fn):  # a point whose draws no earlier point shared
        return lambda: (batched.forget_shared_draws(), fn())[1]

    together = cold(lambda: batched.measure_seeds(cfg, cfg.seed_list, device, torch.float32))
    points = itertools.cycle([cfg.replace({"model.init.scale": 0.5 + 0.1 * i}) for i in range(10)])

    def shared():  # the next point of an init-scale sweep: the draws of the one before, rescaled
        point = next(points)
        return batched.measure_seeds(point, point.seed_list, device, torch.float32)

    fns = {
        "sequential": sequential,
        "batched": together,
        "shared": shared,
        "runs": lambda: [run(c) for c in singles],
        "run": cold(lambda: run(cfg)),
    }
    if device.type == "cpu":  # (the floor counts the CPU generator's words)
        fns["floor"] = _batched_floor(cfg, torch.float32)
    t = interleaved(fns, 2 if quick else 7, warmup=1, sync=device_sync(device))
    ratio, end_to_end = t["sequential"] / t["batched"], t["runs"] / t["run"]
    rows = [
        Row(
            f"{seeds} seeds in one resflow.run vs {seeds} single-seed runs",
            end_to_end,
            "x faster",
            "-",
            None,
            f"MLP depth {depth} width 64 batch 32, end to end (tables, summary, theory): {seeds} runs "
            f"{t['runs'] * 1e3:.0f} ms, one run {t['run'] * 1e3:.0f} ms",
        ),
        Row(
            f"{seeds} seeds batched vs one after another (the measuring pass)",
            ratio,
            "x faster",
            "-",
            None,
            f"build + forward + backward + record each: sequential {t['sequential'] * 1e3:.0f} ms, "
            f"batched {t['batched'] * 1e3:.0f} ms; judge it against the ceiling below",
        ),
        Row(
            f"{seeds} seeds batched, draws shared with the point before (an init-scale sweep)",
            t["batched"] / t["shared"],
            "x faster",
            "-",
            None,
            f"the same pass at another init scale, the seeds' draws kept from the point before: "
            f"{t['shared'] * 1e3:.0f} ms vs {t['batched'] * 1e3:.0f} ms drawn anew",
        ),
    ]
    if "floor" in t:
        rows.append(
            Row(
                f"{seeds} seeds batched: its ceiling here (for comparison)",
                t["sequential"] / t["floor"],
                "x faster",
                "-",
                None,
                f"sequential / {t['floor'] * 1e3:.1f} ms, the time of only what a batched pass cannot "
                "skip: the same random draws (as raw words, the generator's fastest) and one bare stacked forward+backward",
            )
        )
    return rows


def _batched_floor(cfg, dtype):
    """What every batched pass of `cfg` must do at least, with nothing else: each seed's random draws
    (as many generator words as build_model's constructors and init take, drawn as raw int64s) and
    one forward+backward of the stacked weights, without recording."""
    import torch

    from resflow.measure import batched

    assert cfg.model.init.scheme == "default"  # (whose weights and biases take one draw per element, as counted below)
    seeds = cfg.seed_list
    model = batched.StackedMLP(cfg, seeds, torch.device("cpu"), dtype)  # built once, outside the timing
    params = list(model.stacked.values())
    drawn = sum(t.numel() for b in model.template.blocks for t in (b.linear.weight, b.linear.bias) if t is not None)
    words = 2 * drawn * (2 if dtype == torch.float64 else 1)  # the constructors' draws, then init's (one word per float32)
    x0 = torch.randn((len(seeds), cfg.data.batch_size, cfg.model.width), dtype=dtype)

    def floor():
        for seed in seeds:
            torch.empty(words // 2, dtype=torch.int64).random_(generator=torch.Generator().manual_seed(seed))
        x = x0
        for block in model.template.blocks:
            x = model.block(block, x)
        x.sum().backward()
        for p in params:
            p.grad = None

    return floor


# ---------------------------------------------------------------------------------------------
# 3. and 6. Sweeps


def _sweep(points_axes: list[str], seeds: int, workers: int, depth: int = 10) -> float:
    from resflow.config.loading import load_config
    from resflow.sweep.plan import make_plan
    from resflow.sweep.runner import run_sweep

    base = load_config({"name": "bench", "device": "cpu", "seeds": seeds, "model": {"depth": depth, "width": 64}})
    plan = make_plan(base, cli_axes=points_axes)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_sweep(plan, Path(tmp) / "sweep", workers=workers)
        elapsed = time.perf_counter() - t0
        assert (Path(tmp) / "sweep" / "grads.csv").is_file()
    return elapsed


def bench_sweep_workers(quick: bool, device=None) -> list[Row]:  # CPU worker processes, whatever --device says
    axes = (
        ["model.depth=20,30", "model.init.scale=0.5,1"]
        if quick
        else ["model.depth=100,200,300,400", "model.init.scale=0.5,1,1.5,2"]
    )
    reps = 1 if quick else 3
    times = {1: [], 2: []}
    for _ in range(reps):
        for w in (1, 2):
            times[w].append(_sweep(axes, seeds=1 if quick else 8, workers=w))
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    n = 4 if quick else 16
    return [
        Row(
            f"sweep --workers 2 vs 1 ({n} points)",
            t1 / t2,
            "x faster",
            ">= 1.7",
            t1 / t2 >= 1.7,
            f"workers 1: {t1:.2f} s, workers 2: {t2:.2f} s (pool start-up included)",
        )
    ]


def bench_start_method(quick: bool, device=None) -> list[Row]:  # CPU worker processes, whatever --device says
    """The cost of the safe start method: a threaded process (a notebook) gets a forkserver, which
    imports torch once in a fresh process (the first sweep pays it), then forks every pool from it."""
    axes = ["model.depth=20,30", "model.init.scale=0.5,1"]
    reps = 1 if quick else 3
    saved = os.environ.get("RESFLOW_START_METHOD")
    times: dict[str, list[float]] = {"fork": [], "forkserver": []}
    try:
        os.environ["RESFLOW_START_METHOD"] = "forkserver"
        first = _sweep(axes, seeds=1, workers=2)  # starts this process's forkserver
        for _ in range(reps):
            for method in ("fork", "forkserver"):
                os.environ["RESFLOW_START_METHOD"] = method
                times[method].append(_sweep(axes, seeds=1, workers=2))
    finally:
        if saved is None:
            os.environ.pop("RESFLOW_START_METHOD", None)
        else:
            os.environ["RESFLOW_START_METHOD"] = saved
    fork, server = statistics.median(times["fork"]), statistics.median(times["forkserver"])
    return [
        Row(
            "sweep from a threaded process: forkserver vs fork (4 points, workers 2)",
            server / fork,
            "x the time",
            "<= 1.5 (after the first)",
            server / fork <= 1.5,
            f"fork {fork:.2f} s, forkserver {server:.2f} s; the first forkserver sweep {first:.2f} s (starts the server, imports torch)",
        )
    ]


def bench_big_sweep(quick: bool, device=None) -> list[Row]:  # CPU worker processes, whatever --device says
    if quick:
        axes, seeds = ["model.depth=5,10", "model.init.scale=0.5,1", "model.residual=false,true"], 2
    else:
        axes = ["model.depth=10,20,30,40,50,60,70,80,90,100", "model.init.scale=0.5,0.75,1,1.5,2", "model.residual=false,true"]
        seeds = 10
    n = seeds
    for a in axes:
        n *= len(a.split("=")[1].split(","))
    elapsed = _sweep(axes, seeds=seeds, workers=2)
    # the baseline: one Python process per (config, seed), as a shell loop over `resflow run` would do
    per_process = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, depth in enumerate((10, 50, 100)[: 1 if quick else 3]):
            cmd = [
                sys.executable,
                "-m",
                "resflow",
                "run",
                "deep50",
                "--set",
                f"model.depth={depth}",
                "--set",
                "device=cpu",
                "--out",
                str(Path(tmp) / str(i)),
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env(), check=True, capture_output=True)
            per_process.append(time.perf_counter() - t0)
    baseline = statistics.median(per_process) * n
    ratio = baseline / elapsed
    rows = [
        Row(
            f"{n}-run sweep (depth x scale x residual x seeds), workers 2",
            elapsed,
            "s",
            "<= 30",
            elapsed <= 30,
            f"{n // seeds} sweep points x {seeds} seeds, all CSVs written",
        )
    ]
    rows.append(
        Row(
            f"{n}-run sweep vs one process per run",
            ratio,
            "x faster",
            ">= 40",
            ratio >= 40,
            f"one `resflow run` process: median {statistics.median(per_process):.2f} s over "
            f"{len(per_process)} launches, extrapolated x {n} = {baseline:.0f} s (not run in full)",
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# 4. CLI start-up


def _wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env(), check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_cli(quick: bool, device=None) -> list[Row]:  # process launches: no device
    reps = 3 if quick else 9
    py = sys.executable
    typer_t = _wall([py, "-c", "import typer"], reps)
    rows = []
    for args in (["--help"], ["run", "--help"]):
        t = _wall([py, "-m", "resflow", *args], reps)
        rows.append(
            Row(
                f"resflow {' '.join(args)}",
                t,
                "s",
                "<= 0.3",
                t <= 0.3,
                f"{t / typer_t:.2f}x `python -c 'import typer'` ({typer_t:.3f} s)",
            )
        )
    heavy = subprocess.run(
        [
            py,
            "-c",
            "import sys, resflow.cli.app; print(','.join(m for m in ('torch', 'pandas', 'matplotlib', 'ray', 'pydantic', 'numpy') if m in sys.modules))",
        ],
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    rows.append(
        Row(
            "heavy modules imported by resflow.cli.app",
            float(len(heavy.split(",")) if heavy else 0),
            "modules",
            "== 0",
            not heavy,
            heavy or "none of torch, pandas, matplotlib, ray, pydantic, numpy",
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# 5. Depth scaling (each depth in its own process, so peak memory is its own)

DEPTH_PROBE = """
import os, statistics, sys, time, torch
from resflow._sys.allocator import settle_process
settle_process("resflow.experiment", retain_memory=not os.environ.get("RESFLOW_BENCH_GLIBC_MALLOC"))  # as the CLI does
from resflow.config.loading import load_config
from resflow.experiment import measure_seed
depth, device = int(sys.argv[1]), torch.device(sys.argv[2])
torch.set_num_threads(1)
cfg = load_config({"device": device.type, "model": {"depth": depth, "width": 64}, "data": {"batch_size": 32}})
measure_seed(cfg, 0, device)  # warm-up at the same depth
times = []
for seed in (1, 2, 3):
    t0 = time.perf_counter()
    measure_seed(cfg, seed, device)  # (its floats come back to the host: the device's work is done when it returns)
    times.append(time.perf_counter() - t0)
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated(device)  # the device's own peak
else:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # this process's own peak
    peak = int(hwm.split()[1]) * 1024  # peak RSS, bytes
print(statistics.median(times), peak)
"""


def bench_depth(quick: bool, device) -> list[Row]:
    """µs per layer at each depth; bytes per layer as the slope of peak RSS between depths."""
    depths = (100, 1000) if quick else (100, 1000, 10_000)
    seconds, peak = {}, {}
    for depth in depths:
        out = subprocess.run(
            [sys.executable, "-c", DEPTH_PROBE, str(depth), str(device)], env=env(), check=True, capture_output=True, text=True
        ).stdout.split()
        seconds[depth], peak[depth] = float(out[0]), float(out[1])
    us = {d: seconds[d] / d * 1e6 for d in depths}
    slopes = {f"{a}-{b}": (peak[b] - peak[a]) / (b - a) for a, b in zip(depths, depths[1:])}
    spread = max(us.values()) / min(us.values())
    slope_spread = max(slopes.values()) / max(min(slopes.values()), 1.0)
    return [
        Row(
            f"depth scaling: µs/layer, max/min over depths {'/'.join(map(str, depths))}",
            spread,
            "ratio",
            "<= 2",
            spread <= 2,
            "; ".join(f"depth {d}: {u:.0f} µs/layer" for d, u in us.items()) + f"; depth {depths[-1]} ran",
        ),
        Row(
            "depth scaling: peak bytes/layer, max/min between depth pairs",
            slope_spread,
            "ratio",
            "<= 2",
            slope_spread <= 2,
            "; ".join(f"depths {k}: {v / 1024:.0f} KiB/layer" for k, v in slopes.items())
            + f" (saved activations + kept grads + weights and their grads, float32; {'CUDA' if device.type == 'cuda' else 'peak RSS'})",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 7. Large outputs


def bench_export(quick: bool, device=None) -> list[Row]:  # (benchmarks/export_tensorboard.py)
    from benchmarks.export_tensorboard import bench_export as run

    return run(quick, device)


def bench_large_csv(quick: bool, device=None) -> list[Row]:  # CSV writing: no device
    import numpy as np
    import pandas as pd

    from resflow.results.files import write_csv
    from resflow.results.tables import GRADS_COLUMNS

    n = 20_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    data = {c: np.repeat("x", n) for c in GRADS_COLUMNS}
    data.update(
        variant=np.repeat("deep50", n),
        seed=np.arange(n) // 100,
        step=np.zeros(n, dtype=int),
        layer=np.arange(n) % 100,
        sublayer=np.repeat("mlp", n),
        depth=np.full(n, 100),
        width=np.full(n, 64),
        residual=np.zeros(n, dtype=bool),
        residual_scale=np.ones(n),
        init_scale=np.ones(n),
    )
    for c in ("input_grad_norm", "activation_rms", "param_grad_norm"):
        data[c] = np.exp(rng.normal(0, 10, n))  # many decades, full 17-digit mantissas
    df = pd.DataFrame(data)[GRADS_COLUMNS]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grads.csv"
        t0 = time.perf_counter()
        write_csv(df, path)
        elapsed = time.perf_counter() - t0
        t0 = time.perf_counter()
        pandas_text = df.to_csv(index=False)  # the baseline: pandas' own, which write_csv reproduces byte for byte
        pandas_s = time.perf_counter() - t0
        same = pandas_text == path.read_text()
        back = pd.read_csv(path)
    exact = all(
        np.array_equal(back[c].to_numpy(), df[c].to_numpy()) for c in ("input_grad_norm", "activation_rms", "param_grad_norm")
    )
    return [
        Row(
            f"write {n:,} grads.csv rows (resflow.results.csvtext, shortest repr)",
            elapsed,
            "s",
            "< 60 (seconds, not minutes)",
            elapsed < 60 and exact and same,
            f"floats round-trip exactly: {exact}; the same bytes as pandas' to_csv: {same} (which alone takes {pandas_s:.2f} s)",
        )
    ]


BENCHES = {
    "recording": bench_recording,
    "seeds": bench_seeds,
    "workers": bench_sweep_workers,
    "start": bench_start_method,
    "cli": bench_cli,
    "depth": bench_depth,
    "sweep1000": bench_big_sweep,
    "csv": bench_large_csv,
    "export": bench_export,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (does it still run?)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--out", type=Path, default=OUT, help="where results.json / results.csv go")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the recording, seeds and depth benchmarks run their models [auto: CUDA if present]",
    )
    parser.add_argument(
        "--page",
        type=Path,
        default=None,
        metavar="MD",
        help="also write the table as a markdown page, with the machine and commit (docs/performance.md)",
    )
    parser.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds at their defaults (resflow's CLI sets them: resflow/allocator.py)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    import torch

    from resflow._sys.allocator import settle_process

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "python -m benchmarks: error: --device cuda: no CUDA device is available here; use --device auto or cpu",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")

    torch.set_num_threads(1)  # one core per process, as the sweep's workers use; the other core is for the noise
    tuned = settle_process("resflow.experiment", retain_memory=not args.glibc_malloc)  # as the CLI does (resflow/allocator.py)
    os.environ["RESFLOW_BENCH_GLIBC_MALLOC"] = "1" if args.glibc_malloc else ""  # for the depth probes
    rows: list[Row] = []
    for name in names:
        t0 = time.perf_counter()
        new = BENCHES[name](args.quick, device)
        rows += new
        for r in new:
            print(
                f"[{name} {time.perf_counter() - t0:.0f}s] {r.target}: {r.measured:.3g} {r.unit} ({r.threshold}) {r.detail}",
                file=sys.stderr,
            )
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(
        quick=args.quick,
        device=str(device),
        malloc="glibc defaults" if not tuned else "resflow._sys.allocator.retain_freed_memory",
        python=platform.python_version(),
        torch=torch.__version__,
        cpus=os.cpu_count(),
        platform=platform.platform(),
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)
    print(f"wrote {args.out}/results.json and results.csv")
    if args.page is not None:
        write_page(args.page, page(rows, meta, " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])))
        print(f"wrote {args.page}")
    return 0


PAGE_INTRO = """# Performance

!!! note "Produced by `python -m benchmarks --page docs/performance.md`"
    This page is written by that command: the table, the machine and the commit it ran on. Nothing
    here is typed by hand; numbers change with the machine and its load: run the command to get yours.

`python -m benchmarks` measures every performance target side by side in one run (interleaved
repetitions, medians; torch with one thread per process) and prints the table, also written to
`benchmarks/out/results.{json,csv}`. `--quick` (small sizes, few repeats) is what the test suite runs
to check the benchmarks still work; timings are never asserted in tests. `--only NAMES` runs a subset;
`--device` [auto: CUDA if present] is where the recording, seeds and depth benchmarks put their models.
"""


def _commit() -> str:
    """The checkout's short commit, with '+ local changes' when its tracked files differ from it."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + local changes" if dirty else "")


def page(rows: list[Row], meta: dict, command: str) -> str:
    """docs/performance.md: one table, the machine and the commit it was measured on."""
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        PAGE_INTRO,
        "## The table",
        "",
        f"`{command}` at commit {_commit()}, {meta['when']}; {meta['cpus']} CPUs, device {meta['device']}, "
        f"{meta['platform']}, Python {meta['python']}, torch {meta['torch']}; load average {load:.1f} at the end"
        + ("; **--quick: small sizes, few repeats — these are not the real figures**" if meta["quick"] else "")
        + ".",
        "",
        "| target | measured | threshold | pass | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        verdict = "—" if r.passed is None else ("pass" if r.passed else "**FAIL**")
        lines.append(
            f"| {cell(r.target)} | {r.measured:.3g} {cell(r.unit)} | {cell(r.threshold)} | {verdict} | {cell(r.detail)} |"
        )
    return "\n".join(lines) + "\n"


def write_page(path: Path, head: str) -> None:
    """`head` (the intro and the table) as the page's beginning, up to its next `## ` section after
    the table: the sections other benchmarks write below it (sweeps at scale, ...) are kept."""
    doc = path.read_text() if path.is_file() else ""
    at = doc.find("\n## The table")
    rest = doc.find("\n## ", at + 1) if at >= 0 else -1
    path.write_text(head + (doc[rest:] if rest >= 0 else ""))


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="resflow benchmarks")
    for col in ("target", "measured", "threshold", "pass", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        verdict = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
        table.add_row(r.target, f"{r.measured:.3g} {r.unit}", r.threshold, verdict, r.detail)
    Console(width=160).print(table)


if __name__ == "__main__":
    sys.exit(main())
