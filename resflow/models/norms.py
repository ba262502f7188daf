"""Normalisation layers by name: LayerNorm and RMSNorm over the last (feature) dimension, BatchNorm
over the batch (and the image's positions), GroupNorm over groups of channels."""

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


NORMS = {  # (features, **kw) -> a norm over the last dimension of (..., features)
    "layernorm": lambda width, **kw: nn.LayerNorm(width, **kw),
    "rmsnorm": lambda width, **kw: RMSNorm(width, **kw),
}


def make_norm(cfg, channels: int, image: bool = False, **kw) -> nn.Module:
    """The norm `cfg.norm_type` names, for `channels` features: vectors (B, C), or with `image`
    feature maps (B, C, H, W). BatchNorm uses the batch's statistics in train mode (the module's
    default), as a real training step does; GroupNorm takes `cfg.norm_groups` groups."""
    if cfg.norm_type == "batchnorm":
        return (nn.BatchNorm2d if image else nn.BatchNorm1d)(channels, **kw)
    if cfg.norm_type == "groupnorm":
        return nn.GroupNorm(cfg.norm_groups, channels, **kw)
    return NORMS[cfg.norm_type](channels, **kw)
