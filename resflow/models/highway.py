"""The highway block (Srivastava, Greff & Schmidhuber 2015), `model.block: highway`, read top to bottom:

    H(x) = φ(W_H x + b_H)            the transform      (B, W)
    T(x) = σ(W_T x + b_T)            the transform gate (B, W), b_T = model.gate_bias at init
    y    = T(x)·H(x) + (1 − T(x))·x  carry what the gate does not transform

Its config keys, memory estimate and words are resflow.config.families.highway's.
"""

import torch
from torch import nn

from resflow.models.activations import ACTIVATIONS


class HighwayBlock(nn.Module):
    def __init__(self, cfg, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.linear = nn.Linear(cfg.width, cfg.width, bias=cfg.bias, **kw)  # W_H, b_H
        self.gate = nn.Linear(cfg.width, cfg.width, **kw)  # W_T, b_T
        self.act = ACTIVATIONS[cfg.activation]
        self.gate_bias = cfg.gate_bias

    def forward(self, x):  # x: (B, W)
        h = self.act(self.linear(x))  # H(x)
        t = torch.sigmoid(self.gate(x))  # T(x), in (0, 1)
        return t * h + (1 - t) * x  # (B, W)

    @torch.no_grad()
    def init_branches(self) -> None:
        """After the scheme's init: b_T = gate_bias (negative: the block starts by carrying x)."""
        self.gate.bias.fill_(self.gate_bias)
