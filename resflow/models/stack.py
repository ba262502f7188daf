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
