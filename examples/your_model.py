"""Your own model: its gradient flow at initialisation (record) and in your training loop (watch).

PYTHONPATH=. python examples/your_model.py
"""

import torch
from torch import nn

import resflow

torch.manual_seed(0)  # the same numbers on every run (docs/your-model.md shows them)
model = nn.Sequential(nn.Linear(32, 32), *[nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(8)], nn.Linear(32, 4))
x, y = torch.randn(64, 32), torch.randint(4, (64,))

print(resflow.record(model, x).grads[["layer", "module", "input_grad_norm"]].to_string(index=False))

opt = torch.optim.SGD(model.parameters(), lr=0.5)
with resflow.watch(model, every=10, out="results/your-model", force=True) as w:
    for step in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss)
        opt.step()
        opt.zero_grad()
print(w.summary[["step", "grad_first", "grad_last", "grad_ratio"]].to_string(index=False))
