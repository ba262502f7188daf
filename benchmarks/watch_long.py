"""`resflow.watch(out=...)` over a long run: is the cost of a recorded step constant? (issue 24, item 2)

A training loop (forward, backward, SGD step, zero_grad) under `watch(every=1, out=DIR)`, every step
recorded and flushed, timed in windows of `--window` steps starting at steps ~10, 1,000, 10,000 (those
that fit in `--steps`), and this process's RSS at each window's start. Models:
  mlp   24 residual tanh blocks of width 128 (a Linear each), batch 32, cross-entropy over 10 classes;
  gpt2  a 12-layer GPT-2-shaped GPT2LMHeadModel (Hugging Face, random weights, nothing downloaded),
        width --gpt2-width (GPT-2 small: 768; smaller so that thousands of steps fit), batch 2 x 32 tokens.
Printed per model: ms per recorded step in each window (the mean, which counts the merges of the
kept chunks, and the median step), the last window over the first (target
<= 1.10), RSS growth per recorded step between the first and last windows, for in_memory=True (every
row kept as DataFrames) and in_memory=False (only the files); `w.result()` and `w.grads` at the end;
and what the total gradient norm (train.csv's grad_norm_total, taken at every step) costs: the bare
step against the bare step plus `total_grad_norm`, interleaved.

    PYTHONPATH=. python benchmarks/watch_long.py [--models mlp,gpt2] [--steps 10050] [--window 50]
        [--gpt2-width 128] [--gpt2-steps 2050] [--starts 10,1000,10000] [--threads 1] [--clock cpu]
        [--write-docs [PAGE]]

`--write-docs` puts what it prints, with the command, commit, machine and load it ran with, into
docs/real-training.md (or PAGE) between its watch-long start and end markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks import pages

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "real-training.md"
SECTION = "watch-long"  # docs/real-training.md's markers

WINDOW_STARTS = (10, 1_000, 10_000, 100_000)  # (--starts)


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


def mlp(width: int = 128, depth: int = 24, batch: int = 32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), *[Block(width) for _ in range(depth)], nn.Linear(width, 10))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, width, generator=gen), torch.randint(10, (batch,), generator=gen)
    return (
        model,
        (lambda: nn.functional.cross_entropy(model(x), y)),
        f"MLP, {depth} residual tanh blocks x {width}, batch {batch}",
    )


def gpt2(width: int = 128, batch: int = 2, seq: int = 32, vocab: int = 1024):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=12,
        n_embd=width,
        n_head=max(1, width // 64),
        vocab_size=vocab,
        n_positions=seq,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(vocab, (batch, seq), generator=torch.Generator().manual_seed(1))
    label = f"GPT-2 shape, 12 layers x {width}, batch {batch} x {seq} tokens, vocab {vocab}"
    return model, (lambda: model(ids, labels=ids).loss), label


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def long_run(model, loss_fn, steps: int, window: int, in_memory: bool, clock, window_starts=WINDOW_STARTS) -> dict:
    """Per window start: (seconds per step, RSS at its start); and the end's result()/grads times."""
    import resflow

    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    starts = [s for s in window_starts if s + window <= steps]
    windows, t0, rss0, per_step = {}, None, None, []
    with tempfile.TemporaryDirectory() as tmp:
        with resflow.watch(model, every=1, out=Path(tmp) / "run", in_memory=in_memory) as w:
            for s in range(steps):
                if s in starts:
                    t0, rss0 = clock(), rss_bytes()
                t1 = clock()
                loss = loss_fn()
                loss.backward()
                w.step(loss)
                opt.step()
                opt.zero_grad(set_to_none=True)
                per_step.append(clock() - t1)
                if t0 is not None and s + 1 - window in starts:
                    windows[s + 1 - window] = ((clock() - t0) / window, rss0, statistics.median(per_step[-window:]))
                    t0 = None
                    print(f"    (window at step {s + 1 - window}: {windows[s + 1 - window][0] * 1e3:.2f} ms/step)", flush=True)
            t = time.perf_counter()
            w.result()
            result_s = time.perf_counter() - t
            t = time.perf_counter()
            w.grads
            grads_s = time.perf_counter() - t
            rows = len(w.grads)
    return dict(windows=windows, result_s=result_s, grads_s=grads_s, rows=rows)


def grad_norm_cost(model, loss_fn, rounds: int, steps: int, clock) -> tuple[float, float]:
    """(bare seconds per step, with total_grad_norm), interleaved rounds, medians."""
    from resflow.anymodel import total_grad_norm

    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(with_norm: bool):
        for _ in range(steps):
            loss_fn().backward()
            if with_norm:
                total_grad_norm(params)
            opt.step()
            opt.zero_grad(set_to_none=True)

    run(False), run(True)
    times = {False: [], True: []}
    for _ in range(rounds):
        for k in (False, True):
            t0 = clock()
            run(k)
            times[k].append((clock() - t0) / steps)
    return statistics.median(times[False]), statistics.median(times[True])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,gpt2")
    parser.add_argument("--steps", type=int, default=10_050, help="steps of the MLP run")
    parser.add_argument("--gpt2-steps", type=int, default=2_050, help="steps of the GPT-2 run")
    parser.add_argument("--gpt2-width", type=int, default=128)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--starts", default=",".join(map(str, WINDOW_STARTS)), help="the windows' first steps")
    parser.add_argument("--memory", default="true,false", help="in_memory values to run: true,false")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=DOCS,
        type=Path,
        metavar="PAGE",
        help="put what it prints into PAGE [docs/real-training.md] between its watch-long markers",
    )
    args = parser.parse_args(argv)
    if args.write_docs:
        pages.check(args.write_docs, SECTION)
    load_start, at = os.getloadavg()[0], pages.commit()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    builders = {"mlp": (mlp, args.steps), "gpt2": (lambda: gpt2(args.gpt2_width), args.gpt2_steps)}
    report = []  # what is printed, for --write-docs

    def say(line: str) -> None:
        print(line, flush=True)
        report.append(line)

    setting = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; windows of {args.window} steps"
    print(setting)
    for key in args.models.split(","):
        build, steps = builders[key]
        model, loss_fn, label = build()
        bare, normed = grad_norm_cost(model, loss_fn, rounds=5, steps=10, clock=clock)
        say(f"\n{label}: {steps} steps, every=1, out=DIR")
        say(
            f"  total gradient norm at every step: bare {bare * 1e3:.2f} ms/step, with it {normed * 1e3:.2f} ms/step "
            f"({normed / bare:.3f}x)"
        )
        for in_memory in [v.strip() == "true" for v in args.memory.split(",")]:
            model, loss_fn, _ = build()
            r = long_run(model, loss_fn, steps, args.window, in_memory, clock, [int(v) for v in args.starts.split(",")])
            w = r["windows"]
            starts = sorted(w)
            cells = ", ".join(
                f"steps {s}-{s + args.window - 1}: {w[s][0] * 1e3:.2f} ms (median {w[s][2] * 1e3:.2f})" for s in starts
            )
            ratio = w[starts[-1]][0] / w[starts[0]][0]
            growth = (w[starts[-1]][1] - w[starts[0]][1]) / (starts[-1] - starts[0]) if len(starts) > 1 else float("nan")
            say(f"  in_memory={in_memory}: {cells}")
            median_ratio = w[starts[-1]][2] / w[starts[0]][2]
            say(
                f"    last/first window {ratio:.3f}x (medians {median_ratio:.3f}x) (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
                f"RSS {growth / 1024:+.2f} KiB per recorded step ({r['rows'] // steps} grads rows per step); "
                f"at the end w.result() {r['result_s'] * 1e3:.1f} ms, w.grads {r['grads_s'] * 1e3:.2f} ms"
            )
    if args.write_docs:
        command = " ".join(["python -m benchmarks.watch_long", *(argv if argv is not None else sys.argv[1:])])
        text = (
            pages.where(command, setting, (load_start, os.getloadavg()[0]), at)
            + "\n\n```text\n"
            + "\n".join(report).strip("\n")
            + "\n```"
        )
        pages.write_section(args.write_docs, SECTION, text)
        print(f"wrote {args.write_docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
