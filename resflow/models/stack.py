"""The stack: `depth` blocks applied in order, and the recording sites they expose."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class Site(NamedTuple):
    """A place where the gradient is measured: the input of one residual connection (or block).

    `module` is called once per site, in site order, with the residual stream as its first input;
    `params` are the parameters attributed to this site, named relative to their block.
    (A named tuple: a Recorder per step asks a depth-L model for its L sites.)
    """

    layer: int  # block index, 0 nearest the input
    sublayer: str  # "mlp" for MLP blocks; "attn"/"ffn" for transformer blocks
    module: nn.Module
    params: tuple  # ((name, nn.Parameter), ...)
    name: str = ""  # the module's qualified name in its model (any model's blocks; "" for resflow's own)


class Stack(nn.Module):
    """x -> block_0 -> block_1 -> ... -> block_{depth-1}. With shared weights every entry is one module."""

    def __init__(self, blocks: list[nn.Module], final: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final if final is not None else nn.Identity()  # e.g. a pre-norm transformer's

    def forward(self, x):  # (..., W) -> (..., W)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def extra_params(self) -> list[tuple[int, str, nn.Parameter]]:
        """Parameters outside the blocks, as (layer, name, param): the final norm's, at layer = depth."""
        return [(len(self.blocks), f"final_norm.{n}", p) for n, p in self.final_norm.named_parameters()]

    def sites(self) -> list[Site]:
        """One site per block (blocks may override with several, e.g. attn and ffn)."""
        out = []
        for layer, block in enumerate(self.blocks):
            if hasattr(block, "sites"):
                out.extend(block.sites(layer))
            else:
                out.append(Site(layer, "block", block, tuple(block.named_parameters())))
        return out


class Classifier(nn.Module):
    """features (B, F) -> linear stem (B, W) -> the stack (B, W) -> linear head (B, classes): an MLP
    stack on a dataset. The stack's sites are the recorded ones; the stem's parameters are params.csv
    rows at layer -1, the head's at layer = depth."""

    def __init__(self, stack: Stack, features: int, classes: int, device=None, dtype=None):
        super().__init__()
        width = stack.blocks[0].linear.in_features
        self.stem = nn.Linear(features, width, device=device, dtype=dtype)
        self.stack = stack
        self.head = nn.Linear(width, classes, device=device, dtype=dtype)

    @property
    def blocks(self):
        return self.stack.blocks

    def forward(self, x):  # (B, F) -> (B, classes)
        return self.head(self.stack(self.stem(x)))

    def sites(self) -> list[Site]:
        return self.stack.sites()

    def extra_params(self) -> list[tuple[int, str, nn.Parameter]]:
        depth = len(self.stack.blocks)
        stem = [(-1, f"stem.linear.{n}", p) for n, p in self.stem.named_parameters()]
        return stem + self.stack.extra_params() + [(depth, f"head.linear.{n}", p) for n, p in self.head.named_parameters()]
