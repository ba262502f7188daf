"""Activation functions by name: a plain dict, as a registry."""

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01
    "elu": F.elu,
    "selu": F.selu,
    "softplus": F.softplus,
}
