"""What `resflow.watch` costs inside a training loop, side by side in one process.

A training step (forward, backward, SGD step, zero_grad) of two Hugging Face models built from their
config classes (random weights, nothing downloaded):
  resnet  ResNet-18-shaped ResNetForImageClassification (basic blocks 2-2-2-2, widths 64-512),
          batch 16 of 3x64x64, cross-entropy over 10 classes;
  gpt2    12-layer GPT-2-small-shaped GPT2LMHeadModel (768 wide, 12 heads), next-token loss;
  mlp     50 residual blocks x + tanh(Linear(LayerNorm(x))), 256 wide, batch 64, cross-entropy.
In a real run's setting too: `--checkpoint` (activation checkpointing: Hugging Face's
gradient_checkpointing_enable() for resnet/gpt2, torch.utils.checkpoint around each mlp block, both
non-reentrant) and `--micro 4` (gradient accumulation: 4 forward/backward per step, each loss / 4).
Variants, each the same loop:
  bare              nothing attached
  watch every=1     resflow.watch(model, every=1): every step recorded
  watch every=10    resflow.watch(model, every=10)
  hand hooks        hand-written hooks doing the same work on every step (the floor of any
                    hook-based recorder): a forward pre-hook per block taking ||x|| and the block's
                    parameter norms, a tensor hook for ||dloss/dx||, the blocks' parameter-gradient
                    norms after backward and the gradient and value norms of the parameters outside
                    the blocks (embeddings, head), every float read in one transfer
  wandb-style       wandb.watch(log="gradients")'s work on every step: a hook per parameter gradient
                    taking a 64-bin torch.histc (and its min/max), read back to the host
  lightning-style   Lightning's grad_norm(module, 2): a dict of every parameter gradient's 2-norm and
                    their total, read back
Timing: rounds of `steps` consecutive steps per variant (every=10's recorded step is amortised
over its round), variants interleaved round by round, median round time over `rounds`; ratios to
bare. Targets: every=10 <= 1.02x bare; every=1 within 0.02 of hand hooks.

    PYTHONPATH=. python benchmarks/watch_overhead.py [--models resnet,gpt2,mlp] [--rounds 3] [--steps 10]
        [--vocab 50257] [--threads N] [--checkpoint] [--micro 4] [--write-docs [PAGE]]

`--write-docs` puts the tables, with the command, commit, machine and load they were measured with,
into docs/your-model.md (or PAGE) between its watch-overhead start and end markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks import pages

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "your-model.md"
SECTION = "watch-overhead"  # docs/your-model.md's markers


# ---------------------------------------------------------------------------------------------
# Models and batches


def resnet18(batch: int = 16, size: int = 64):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(
        depths=[2, 2, 2, 2], layer_type="basic", hidden_sizes=[64, 128, 256, 512], embedding_size=64, num_labels=10
    )
    model = transformers.ResNetForImageClassification(cfg)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(10, (batch,), generator=gen)
    return model, (lambda: nn.functional.cross_entropy(model(x).logits, y)), "ResNet-18 shape, batch 16 x 3x64x64"


def gpt2_small(batch: int = 2, seq: int = 32, vocab: int = 50257):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=12, n_embd=768, n_head=12, vocab_size=vocab, n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(vocab, (batch, seq), generator=torch.Generator().manual_seed(1))
    return model, (lambda: model(ids, labels=ids).loss), f"GPT-2 small shape (12 x 768), batch {batch} x seq {seq}, vocab {vocab}"


class ResMLP(nn.Module):
    def __init__(self, width: int = 256, depth: int = 50, checkpointed: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.Tanh()) for _ in range(depth)]
        )
        self.head = nn.Linear(width, 10)
        self.checkpointed = checkpointed

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        for block in self.blocks:
            x = x + (checkpoint(block, x, use_reentrant=False) if self.checkpointed else block(x))
        return self.head(x)


def mlp(batch: int = 64, width: int = 256, checkpointed: bool = False):
    torch.manual_seed(0)
    model = ResMLP(width, checkpointed=checkpointed)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, generator=gen)
    y = torch.randint(10, (batch,), generator=gen)
    return model, (lambda: nn.functional.cross_entropy(model(x), y)), f"50 x {width} residual MLP, batch {batch}"


# ---------------------------------------------------------------------------------------------
# The comparison recorders


class HandHooks:
    """The same measurements as resflow's, written by hand for these blocks, as lean as it gets."""

    def __init__(self, blocks, extra):
        self.blocks, self.extra = blocks, extra  # extra: the parameters outside the blocks (params.csv rows)
        self.params = [list(b.parameters()) for b in blocks]
        self.handles = [b.register_forward_pre_hook(self.pre, with_kwargs=True) for b in blocks]
        self.index = {id(b): i for i, b in enumerate(blocks)}

    def pre(self, module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        i = self.index[id(module)]
        self.x_norms.append(torch._foreach_norm([x.detach(), *[p.detach() for p in self.params[i]]])[0])
        if x.requires_grad:
            x.register_hook(lambda g: self.g_norms.append(torch.linalg.vector_norm(g)))

    def begin(self):
        self.x_norms, self.g_norms = [], []  # one per block call (accumulation: several per block)

    def end(self):
        p_norms = [torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in ps]))) for ps in self.params]
        e_grads = torch._foreach_norm([p.grad for p in self.extra])
        e_values = torch._foreach_norm([p.detach() for p in self.extra])
        return torch.stack([*self.x_norms, *self.g_norms, *p_norms, *e_grads, *e_values]).tolist()

    def remove(self):
        for h in self.handles:
            h.remove()


class WandbStyle:
    """wandb.watch(model, log='gradients', log_freq=1): per parameter gradient, a 64-bin histogram
    over [min, max] (torch.histc) and the range, read to the host."""

    def __init__(self, model):
        self.out = []
        self.handles = [p.register_hook(self.hook) for p in model.parameters() if p.requires_grad]

    def hook(self, grad):
        flat = grad.detach().reshape(-1).float()
        lo, hi = flat.min(), flat.max()
        self.out.append((torch.histc(flat, bins=64, min=lo.item(), max=hi.item()), lo, hi))

    def end(self):
        values = [(h.tolist(), lo.item(), hi.item()) for h, lo, hi in self.out]
        self.out = []
        return values

    def remove(self):
        for h in self.handles:
            h.remove()


def lightning_grad_norm(model) -> dict:
    """lightning.pytorch.utilities.grad_norm(model, norm_type=2), read to floats."""
    norms = {f"grad_2.0_norm/{n}": p.grad.norm(2) for n, p in model.named_parameters() if p.grad is not None}
    total = torch.stack(list(norms.values())).norm(2)
    keys = [*norms, "grad_2.0_norm_total"]
    return dict(zip(keys, torch.stack([*norms.values(), total]).tolist()))


# ---------------------------------------------------------------------------------------------
# The loops


def variants(model, loss_fn, steps: int, micro: int = 1):
    """name -> a function running `steps` training steps of that variant, each of `micro`
    forward/backward passes (gradient accumulation, each loss / micro)."""
    import resflow
    from resflow.measure.blocks import find_blocks, outside_params

    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    named = find_blocks(model)
    blocks, extra = [m for _, m in named], [p for _, p in outside_params(model, named)]

    def finish():
        opt.step()
        opt.zero_grad(set_to_none=True)

    def backward():
        for _ in range(micro):
            loss = loss_fn() / micro
            loss.backward()
        return loss

    def bare():
        for _ in range(steps):
            backward()
            finish()

    def watched(every):
        def loop():
            with resflow.watch(model, every=every) as w:
                for _ in range(steps):
                    loss = backward()
                    w.step(loss)
                    finish()
            return w

        return loop

    def hand():
        hooks = HandHooks(blocks, extra)
        try:
            for _ in range(steps):
                hooks.begin()
                backward()
                hooks.end()
                finish()
        finally:
            hooks.remove()

    def wandb_style():
        hooks = WandbStyle(model)
        try:
            for _ in range(steps):
                backward()
                hooks.end()
                finish()
        finally:
            hooks.remove()

    def lightning_style():
        for _ in range(steps):
            backward()
            lightning_grad_norm(model)
            finish()

    return {
        "bare": bare,
        "watch every=1": watched(1),
        "watch every=10": watched(10),
        "hand hooks": hand,
        "wandb-style": wandb_style,
        "lightning-style": lightning_style,
    }


def measure(model, loss_fn, rounds: int, steps: int, clock=time.perf_counter, micro: int = 1) -> dict[str, float]:
    for loop in variants(model, loss_fn, 2, micro).values():  # warm up every path (2 steps each)
        loop()
    loops = variants(model, loss_fn, steps, micro)
    times = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():  # interleaved: drift on a shared machine hits all alike
            t0 = clock()
            loop()
            times[name].append(clock() - t0)
    return {name: statistics.median(ts) / steps for name, ts in times.items()}


def targets(t: dict[str, float]) -> str:
    """The targets' verdicts from one model's times per step."""
    e1, e10, hand = (t[k] / t["bare"] for k in ("watch every=1", "watch every=10", "hand hooks"))
    return (
        f"targets: every=10 {e10:.3f}x <= 1.02x: {'met' if e10 <= 1.02 else 'NOT met'}; "
        f"every=1 - hand hooks = {e1 - hand:+.3f} (within 0.02: {'met' if abs(e1 - hand) <= 0.02 else 'NOT met'})"
    )


def markdown(
    measured: list[tuple[str, dict[str, float]]], command: str, setting: str, loads: tuple[float, float], at: str
) -> str:
    """The docs section: where and how it was measured, then one table per model."""
    parts = [pages.where(command, setting, loads, at)]
    for label, t in measured:
        rows = [f"| {label} (bare {t['bare'] * 1e3:.1f} ms/step) | ms/step | × bare |", "|---|---|---|"]
        rows += [f"| {name} | {sec * 1e3:.1f} | {sec / t['bare']:.3f} |" for name, sec in t.items() if name != "bare"]
        verdict = targets(t)
        parts += ["\n".join(rows), f"{verdict[0].upper()}{verdict[1:]}."]
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,gpt2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per round (every=10 records one of them)")
    parser.add_argument("--vocab", type=int, default=50257, help="gpt2's vocabulary (its LM head's size)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint", action="store_true", help="activation checkpointing (non-reentrant)")
    parser.add_argument("--micro", type=int, default=1, help="micro-batches per step (gradient accumulation)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this process's CPU time (with --threads 1, less moved by other processes "
        "on a shared machine than the wall clock)",
    )
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=DOCS,
        type=Path,
        metavar="PAGE",
        help=f"put the tables into PAGE [{DOCS.relative_to(ROOT)}] between its watch-overhead markers",
    )
    args = parser.parse_args(argv)
    if args.write_docs:
        pages.check(args.write_docs, SECTION)
    load_start, at = os.getloadavg()[0], pages.commit()
    if args.threads:
        torch.set_num_threads(args.threads)
    builders = {
        "resnet": resnet18,
        "gpt2": lambda: gpt2_small(vocab=args.vocab),
        "mlp": lambda: mlp(checkpointed=args.checkpoint),
    }
    setting = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of {args.steps} steps; "
        f"{args.clock} clock; checkpointing {'on' if args.checkpoint else 'off'}; {args.micro} micro-batch(es) per step"
    )
    print(setting)
    measured = []
    for key in args.models.split(","):
        model, loss_fn, label = builders[key]()
        if args.checkpoint and key != "mlp":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        t = measure(model, loss_fn, args.rounds, args.steps, clock, args.micro)
        print(f"\n{label}: bare {t['bare'] * 1e3:.1f} ms/step")
        for name, sec in t.items():
            print(f"  {name:16s} {sec * 1e3:9.1f} ms/step  {sec / t['bare']:.3f}x bare")
        print(f"  {targets(t)}", flush=True)
        measured.append((label, t))
    if args.write_docs:
        command = " ".join(["python -m benchmarks.watch_overhead", *(argv if argv is not None else sys.argv[1:])])
        pages.write_section(args.write_docs, SECTION, markdown(measured, command, setting, (load_start, os.getloadavg()[0]), at))
        print(f"wrote {args.write_docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
