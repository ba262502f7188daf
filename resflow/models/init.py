"""Weight initialisation schemes by name, applied to every nn.Linear and nn.Conv2d of a model.

Uses torch's global RNG, so the caller seeds it (the experiment does, inside `fork_rng`).
"""

import math

import torch
from torch import nn

# nn.init.kaiming_uniform_(w, a=sqrt(5))'s gain, as it computes it (tests: bit for bit the same draws)
_DEFAULT_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))


def _fan_in(w) -> int:  # inputs per output: in_features of a linear weight, in_channels*k*k of a conv's
    return w.shape[1] if w.dim() == 2 else w[0].numel()


def _default(w, scale):  # PyTorch's own nn.Linear/nn.Conv2d init (kaiming_uniform, a=sqrt(5)), times scale
    # kaiming_uniform_'s arithmetic (std, then bound) without its per-call checks: one call per layer
    # per seed adds up in resflow.measure.batched
    bound = math.sqrt(3.0) * (_DEFAULT_GAIN / math.sqrt(_fan_in(w)))
    w.uniform_(-bound, bound)
    if scale != 1:  # x * 1.0 == x: skipped, bit for bit the same
        w.mul_(scale)


def _normal(w, scale):  # N(0, scale^2 / fan_in): scale is sigma_w of mean-field theory
    nn.init.normal_(w, 0.0, scale / math.sqrt(_fan_in(w)))


def _xavier(w, scale):  # Xavier/Glorot normal N(0, 2/(fan_in+fan_out)), times scale
    nn.init.xavier_normal_(w, gain=scale)


def _kaiming(w, scale):  # He normal N(0, 2/fan_in) (for ReLU), times scale
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    if scale != 1:
        w.mul_(scale)


def _kaiming_with(mode: str, distribution: str):
    """He init with torch's `mode` (fan_in/fan_out) and distribution (normal/uniform), times scale."""
    draw = nn.init.kaiming_uniform_ if distribution == "uniform" else nn.init.kaiming_normal_

    def init(w, scale):
        draw(w, mode=mode, nonlinearity="relu")
        if scale != 1:
            w.mul_(scale)

    return init


def _orthogonal(w, scale):  # (semi-)orthogonal, times scale
    nn.init.orthogonal_(w, gain=scale)


def _constant(w, scale):  # every weight equals scale
    nn.init.constant_(w, scale)


# schemes whose `scale` multiplies the weights after their draws (`w.mul_(scale)`): the draws do not
# depend on it, so resflow.measure.batched shares them between points that differ only in scale
SCALED_AFTER_DRAW = frozenset({"default", "kaiming"})

WEIGHT_INITS = {
    "default": _default,
    "normal": _normal,
    "xavier": _xavier,
    "kaiming": _kaiming,
    "orthogonal": _orthogonal,
    "constant": _constant,
}


def seed_rng(seed: int, device) -> None:
    """Seed the generator that building a model on `device` draws from, as torch.manual_seed does.

    On the CPU only torch's CPU generator: torch.manual_seed also queues a seed for every lazy
    accelerator backend (CUDA, XPU, MTIA), recording a stack trace each time, a cost
    paid once per seed (and those queued seeds would reach a CUDA RNG initialised later).
    """
    if torch.device(device).type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


@torch.no_grad()
def initialize(model: nn.Module, init) -> None:
    """Initialise every nn.Linear's and nn.Conv2d's weight by `init.scheme`/`init.scale` and bias by
    `init.bias_std` (fan_in of a conv: in_channels x kernel height x kernel width). Norms keep their
    own init (weight 1, bias 0)."""
    init_linears([(m.weight, m.bias) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))], init)


@torch.no_grad()
def init_linears(linears: list[tuple[torch.Tensor, torch.Tensor | None]], init) -> None:
    """`initialize` on (weight (out, in), bias or None) pairs, in order: the same draws, the same values.

    resflow.measure.batched passes slices of its stacked per-seed tensors here.
    """
    weight_init = WEIGHT_INITS[init.scheme]
    mode, distribution = getattr(init, "mode", "fan_in"), getattr(init, "distribution", "normal")
    if init.scheme == "kaiming" and (mode, distribution) != ("fan_in", "normal"):
        weight_init = _kaiming_with(mode, distribution)
    for weight, bias in linears:
        weight_init(weight, init.scale)
        if bias is None:
            continue
        if init.bias_std is None:
            if init.scheme == "default":  # PyTorch's own bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                bound = 1.0 / math.sqrt(_fan_in(weight))
                bias.uniform_(-bound, bound)  # nn.init.uniform_'s draw, without its per-call checks
            else:
                nn.init.zeros_(bias)
        elif init.bias_std == 0:
            nn.init.zeros_(bias)
        else:
            nn.init.normal_(bias, 0.0, init.bias_std)
