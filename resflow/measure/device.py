"""Devices, dtypes and input shapes, shared by measuring at initialisation, batched seeds and training."""

from __future__ import annotations

import torch

from resflow.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; `cuda` without a CUDA device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available; use device: auto or cpu")
    return torch.device(name)


def input_shape(cfg) -> tuple[int, ...]:
    """The input batch's shape for one of resflow's own models (`cfg`: a Config): a classifier's
    (a conv net, or a dataset's examples) images (B, C, H, W) or features (B, F), else the stack's."""
    from resflow.measure.data import model_io

    io = model_io(cfg)
    if io is not None:
        return (cfg.data.batch_size, *io[0])
    return cfg.model.input_shape(cfg.data)  # the block family's: (B, W), a transformer's (B, T, C)
