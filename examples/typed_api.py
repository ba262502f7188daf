"""A user script that mypy --strict checks against resflow's real signatures (.ci/run, and
tests/test_typing.py): `resflow.run`, `record` and `watch` are typed, not `Any`."""

from __future__ import annotations

import torch
from torch import nn

import resflow


def main() -> None:
    result: resflow.RunResult = resflow.run(resflow.load_config("deep50", ["model.depth=3", "seeds=1"]))
    print(result.grads["input_grad_norm"].median())
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
    once: resflow.RunResult = resflow.record(model, torch.randn(3, 4))
    print(len(once.grads))
    with resflow.watch(model, every=1) as w:
        model(torch.randn(3, 4)).sum().backward()
        w.step()
    print(w.recorded)


if __name__ == "__main__":
    main()
