"""Recording overhead on the reference transformer (configs/pre-norm.yaml: 12 blocks, width 256,
4 heads, batch 8 x seq 32): a bare forward+backward vs the same step under the Recorder (hooks +
collect() into floats), measured side by side in one process, interleaved, median of many repeats.

    PYTHONPATH=. python benchmarks/transformer_overhead.py [--config post-norm] [--repeats 30] [--threads 1]

`reference_step(cfg)` is the reusable piece: it returns (bare, recorded) zero-argument callables
(`step_pair(model, x, loss_fn)` the same for a model already built).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from resflow.config.loading import load_config
from resflow.experiment import prepare_seed
from resflow.measure.device import resolve_device
from resflow.measure.recorder import Recorder


def reference_config(name: str = "pre-norm", overrides: list[str] | None = None):
    return load_config(name, ["data.batch_size=8", "data.seq_len=32", *(overrides or [])])


def reference_step(cfg, seed: int = 0):
    """(bare, recorded): one forward+backward each; `recorded` also collects every measurement."""
    return step_pair(*prepare_seed(cfg, seed, resolve_device(cfg.device)))


def step_pair(model, x, loss_fn):
    """(bare, recorded) steps of an already built model (benchmarks/run.py's MLP row uses it too)."""

    def zero():
        model.zero_grad(set_to_none=True)
        x.grad = None

    def bare():
        zero()
        loss_fn(model(x)).backward()

    def recorded():  # the whole cost of a record: a Recorder set up, attached and collected every step
        zero()
        with Recorder(model) as rec:
            loss_fn(model(x)).backward()
            return rec.collect()

    return bare, recorded


def time_pair(bare, recorded, repeats: int = 30, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        bare(), recorded()
    tb, tr = [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
        t0 = time.perf_counter()
        bare()
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        recorded()
        tr.append(time.perf_counter() - t0)
    return statistics.median(tb), statistics.median(tr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pre-norm")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = reference_config(args.config)
    t0 = time.perf_counter()
    bare, recorded = reference_step(cfg)
    rec = recorded()
    first = time.perf_counter() - t0
    tb, tr = time_pair(bare, recorded, args.repeats)
    m = cfg.model
    print(
        f"{cfg.name}: {m.depth} blocks, width {m.width}, {m.heads} heads, batch {cfg.data.batch_size} x seq {cfg.data.seq_len}, "
        f"{len(rec.layer)} sites, {len(rec.param_name)} params"
    )
    print(f"build + first recorded step: {first * 1e3:.1f} ms")
    print(f"bare forward+backward:       {tb * 1e3:.2f} ms (median of {args.repeats})")
    print(f"recorded (hooks + collect):  {tr * 1e3:.2f} ms")
    print(f"overhead ratio recorded/bare: {tr / tb:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
