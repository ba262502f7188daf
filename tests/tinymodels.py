"""Small user-style models for the watch/record tests: residual tanh blocks and a linear head."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):  # (B, width) -> (B, width)
        return x + torch.tanh(self.lin(x))


class Tiny(nn.Module):
    def __init__(self, width=6, depth=3):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x):  # (B, width) -> (B, 2)
        for b in self.blocks:
            x = b(x)
        return self.head(x)
