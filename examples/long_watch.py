"""A long watched run: flushes append, nothing but the current step kept in memory (in_memory=False).

PYTHONPATH=. python examples/long_watch.py [--small]

The model and data of examples/your_model.py; 1000 steps recorded every 100 (--small: 100 every 10).
"""

import sys

import torch
from torch import nn

import resflow

steps, every = (100, 10) if "--small" in sys.argv[1:] else (1000, 100)
torch.manual_seed(0)  # the same numbers on every run (docs/real-training.md shows them)
model = nn.Sequential(nn.Linear(32, 32), *[nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(8)], nn.Linear(32, 4))
x, y = torch.randn(64, 32), torch.randint(4, (64,))
opt = torch.optim.SGD(model.parameters(), lr=0.5)

with resflow.watch(model, every=every, out="results/long", force=True, in_memory=False) as w:
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss)
        opt.step()
        opt.zero_grad()
print(w.train[["step", "loss", "grad_norm_total"]].iloc[[0, 1, 2, steps - 1]].to_string(index=False))
print(w.result().meta["recorded_steps"])
