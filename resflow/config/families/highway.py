"""`model.block: highway` — highway networks (Srivastava, Greff & Schmidhuber 2015, "Highway
Networks", arXiv:1505.00387; "Training Very Deep Networks", NeurIPS 2015): each block is

    y = T(x)·H(x) + (1 − T(x))·x,   H(x) = φ(W_H x + b_H),   T(x) = σ(W_T x + b_T)

a learned gate T between the transform H and the carried input x. The gate bias b_T starts
negative (the papers found a negative bias such as −1 or −3 enough for very deep networks to learn,
whatever W_H's initialisation and H's activation), so at initialisation each block mostly carries
its input: the gated skip that let highway networks train 100 layers before
ResNets. resflow.models.highway builds it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from resflow.config.families.base import Block
from resflow.config.families.mlp import BLOCK_DESCRIPTION
from resflow.config.sections import ACTIVATION_NAMES, InitConfig


class Highway(Block):
    name = "highway"
    plural = "highway networks"
    task = "teacher"
    defaults = {"activation": "tanh"}

    block: Literal["highway"] = Field("highway", description=BLOCK_DESCRIPTION)
    depth: int = Field(ge=1, description="number of highway blocks")
    width: int = Field(ge=1, description="features in = features out of every block")
    activation: Literal[ACTIVATION_NAMES] = Field("tanh", description="φ of the transform H (the gate is a sigmoid)")  # type: ignore[valid-type]
    gate_bias: float = Field(
        -2.0,
        description="b_T, every entry at initialisation: negative carries the input (T ≈ σ(b_T) = 0.12 at −2); "
        "Srivastava et al. 2015 use −1 to −3",
    )
    bias: bool = Field(True, description="a bias b_H in the transform (the gate always has b_T)")
    share_weights: bool = Field(False, description="one block reused at every depth")
    init: InitConfig = Field(
        InitConfig(), description="weight initialisation of W_H and W_T, and of b_H (the `model.init` section)"
    )

    def memory(self, d) -> tuple[int, int, int, dict]:
        W, N = self.width, d.batch_size
        params = (2 * W * W + (W if self.bias else 0) + W) * (1 if self.share_weights else self.depth)
        per_block = N * W * 9  # x, W_H x, H, W_T x, T, T·H, 1 − T, sum, recorder grad
        return params, per_block * self.depth, self.depth, {"params": "model.width", "activations": "data.batch_size"}

    def title(self, data) -> str:
        shape = f"{self.depth} × highway width {self.width}, {self.activation}"
        if data.dataset is not None:
            shape += f", {data.dataset}"
        return f"{shape}, gate bias {self.gate_bias:g}, {self.init_words()}"

    def theory_words(self) -> str:
        return f"highway, {self.activation}, gate bias {self.gate_bias:g}"

    def columns(self) -> dict[str, Any]:  # no residual or norm keys: those columns stay empty
        return dict(activation=self.activation, residual=None, residual_scale=None, norm=None, norm_type=None)
