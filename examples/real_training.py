"""watch in a real training loop: checkpointing, gradient accumulation, torch.compile, mixed
precision. Each case is recorded next to the plain run it must equal; docs/real-training.md shows
this script's output.

PYTHONPATH=. python examples/real_training.py
"""

import copy

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import resflow


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.norm, self.lin = nn.LayerNorm(w), nn.Linear(w, w)

    def forward(self, x):
        return x + torch.tanh(self.lin(self.norm(x)))


class Net(nn.Module):
    def __init__(self, w=32, depth=4, checkpointed=False):
        super().__init__()
        self.inp, self.head = nn.Linear(w, w), nn.Linear(w, 4)
        self.blocks = nn.ModuleList([Block(w) for _ in range(depth)])
        self.checkpointed = checkpointed

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False) if self.checkpointed else block(h)
        return self.head(h)


torch.manual_seed(0)
x, y = torch.randn(64, 32), torch.randint(4, (64,))
COLS = ["layer", "module", "input_grad_norm", "activation_rms", "micro_batches"]


def one_step(model, micro=1, autocast=False, scaler=None, opt=None):
    """One watched step of `micro` micro-batches (each loss / micro): its grads rows."""
    with resflow.watch(model, grad_scaler=scaler) as w:
        for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(model(xs), ys) / micro
            (scaler.scale(loss) if scaler else loss).backward()
        w.step()
    model.zero_grad()
    return w.grads


def show(title, got, plain):
    """One line: the rows' count, micro_batches, and the largest relative gap from `plain`'s."""
    gap = max(((got[c] - plain[c]).abs() / plain[c]).max() for c in ("input_grad_norm", "activation_rms", "param_grad_norm"))
    print(f"{title:52s} {len(got)} rows  micro_batches {got['micro_batches'].iloc[0]}  max rel. gap {gap:.1e}")


model = Net()
plain = one_step(model)
print("plain step, one forward of 64 samples:")
print(plain[COLS].to_string(index=False))
print("4 micro-batches of 16, each loss / 4:")
print(one_step(model, micro=4)[COLS].to_string(index=False))
print()
ckpt = Net(checkpointed=True)
ckpt.load_state_dict(model.state_dict())
show("checkpointed (non-reentrant) vs plain", one_step(ckpt), plain)
show("4 micro-batches vs plain", one_step(model, micro=4), plain)
show("checkpointed and 4 micro-batches vs plain", one_step(ckpt, micro=4), plain)
compiled = copy.deepcopy(model)
compiled.compile(backend="eager")
compiled(x)  # compiled and run before watch: the recorded step runs eagerly, with every hook
show("model.compile(), run before watch, vs plain", one_step(compiled), plain)
bf16 = one_step(model, autocast=True)
show("autocast(bfloat16) vs plain float32", bf16, plain)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
show("autocast + GradScaler(2**12) vs autocast alone", one_step(model, autocast=True, scaler=scaler), bf16)
