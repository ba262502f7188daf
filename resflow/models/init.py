"""Weight initialisation schemes by name, applied to every nn.Linear of a model.

Uses torch's global RNG, so the caller seeds it (the experiment does, inside `fork_rng`).
"""

import math

import torch
from torch import nn


def _default(w, scale):  # PyTorch's own nn.Linear init (kaiming_uniform, a=sqrt(5)), times scale
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    w.mul_(scale)


def _normal(w, scale):  # N(0, scale^2 / fan_in): scale is sigma_w of mean-field theory
    nn.init.normal_(w, 0.0, scale / math.sqrt(w.shape[1]))


def _xavier(w, scale):  # Xavier/Glorot normal N(0, 2/(fan_in+fan_out)), times scale
    nn.init.xavier_normal_(w, gain=scale)


def _kaiming(w, scale):  # He normal N(0, 2/fan_in) (for ReLU), times scale
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    w.mul_(scale)


def _orthogonal(w, scale):  # (semi-)orthogonal, times scale
    nn.init.orthogonal_(w, gain=scale)


def _constant(w, scale):  # every weight equals scale
    nn.init.constant_(w, scale)


WEIGHT_INITS = {
    "default": _default,
    "normal": _normal,
    "xavier": _xavier,
    "kaiming": _kaiming,
    "orthogonal": _orthogonal,
    "constant": _constant,
}


@torch.no_grad()
def initialize(model: nn.Module, init) -> None:
    """Initialise every nn.Linear's weight by `init.scheme`/`init.scale` and bias by `init.bias_std`."""
    weight_init = WEIGHT_INITS[init.scheme]
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        weight_init(module.weight, init.scale)
        if module.bias is None:
            continue
        if init.bias_std is None:
            if init.scheme == "default":  # PyTorch's own bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                bound = 1.0 / math.sqrt(module.weight.shape[1])
                nn.init.uniform_(module.bias, -bound, bound)
            else:
                nn.init.zeros_(module.bias)
        elif init.bias_std == 0:
            nn.init.zeros_(module.bias)
        else:
            nn.init.normal_(module.bias, 0.0, init.bias_std)
