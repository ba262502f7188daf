"""Normalisation layers by name: LayerNorm and RMSNorm over the last (feature) dimension."""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019); no mean subtraction, no bias."""

    def __init__(self, width: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width, device=device, dtype=dtype))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


NORMS = {
    "layernorm": lambda width, **kw: nn.LayerNorm(width, **kw),
    "rmsnorm": lambda width, **kw: RMSNorm(width, **kw),
}
