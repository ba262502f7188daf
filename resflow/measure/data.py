"""Inputs and losses, drawn from an explicit generator so every seed's data is reproducible.

Data are drawn in float64 on the CPU and then cast, so float32 and float64 runs see the same input.
The data generator is separate from the model's: the same seed gives the same input to every model.
"""

import torch
import torch.nn.functional as F

DATA_SEED_OFFSET = 1_000_003  # data generator seed = seed + offset, distinct from the model's stream


def data_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed + DATA_SEED_OFFSET)


def make_input(data_cfg, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if data_cfg.input == "tokens":  # random ids embedded by a fixed random table (data, not a parameter)
        table = torch.randn((data_cfg.vocab, shape[-1]), generator=gen, dtype=torch.float64) * data_cfg.input_scale
        ids = torch.randint(data_cfg.vocab, shape[:-1], generator=gen)  # (B, T)
        return table[ids]  # (B, T, C)
    if data_cfg.input == "ones":
        return torch.full(shape, float(data_cfg.input_scale), dtype=torch.float64)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * data_cfg.input_scale


def model_io(cfg) -> tuple | None:
    """(one example's shape, classes) for a classifier (a conv net, or any block on a dataset), or
    None for a plain stack (width in, width out)."""
    if cfg.data.dataset is not None:
        from resflow.measure.datasets import load

        data = load(cfg.data.dataset)
        return cfg.model.example_shape(data.shape), data.classes
    if cfg.model.always_classifier:  # a conv ResNet: a stem, stages and a head, of images
        from resflow.models.build import IMAGE

        return IMAGE
    return None


def make_loss(kind: str, out_shape: tuple[int, ...], gen: torch.Generator, device, dtype, labels=None):
    """A function output -> scalar loss. Targets/directions are fixed per seed (drawn from `gen`);
    cross_entropy: mean cross-entropy of the logits against `labels`."""
    if kind == "cross_entropy":
        return lambda out: F.cross_entropy(out, labels)
    if kind == "sum":
        return lambda out: out.sum()
    if kind == "mean":
        return lambda out: out.mean()
    fixed = torch.randn(out_shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if kind == "mse":
        return lambda out: (out - fixed).pow(2).mean()
    if kind == "random":
        return lambda out: (out * fixed).sum()
    raise ValueError(f"unknown loss {kind!r}")
