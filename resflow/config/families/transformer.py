"""`model.block: transformer` — pre/post-norm GPT-style blocks (causal self-attention and an FFN, each
in its residual connection), trained on next-token prediction (resflow.models.transformer builds it)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from resflow.config.families.base import Block, norm_words, residual_words
from resflow.config.families.mlp import BLOCK_DESCRIPTION, number_or_deepnorm
from resflow.config.sections import InitConfig


class TransformerInit(InitConfig):
    zero_out: bool = Field(
        False,
        description="zero the attention and FFN output projections (weights and biases) after the scheme's init (microgpt)",
    )


class Transformer(Block):
    name = "transformer"
    plural = "transformers"
    task = "sequence"
    classifies = False
    sequences = True
    defaults = {"heads": 4, "ffn": "gelu", "ffn_mult": 4.0}

    block: Literal["transformer"] = Field("transformer", description=BLOCK_DESCRIPTION)
    depth: int = Field(ge=1, description="number of blocks")
    width: int = Field(ge=1, description="the residual stream's features (C)")
    residual: bool = Field(False, description="x + α·f(x) instead of f(x), for attention and FFN")
    residual_scale: Union[float, Literal["deepnorm"]] = Field(
        1.0,
        description="α; post-norm only: `deepnorm` = DeepNet's norm(a·x + f(x)), a = (2N)^¼, "
        "with the v, out and FFN layers (weights and biases) × β = (8N)^−¼ at init",
    )
    norm: Literal["none", "pre", "post"] = Field("none", description="where the norm sits")
    norm_type: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="which norm")
    bias: bool = Field(True, description="biases in every linear layer")
    share_weights: bool = Field(False, description="one block reused at every depth")
    init: TransformerInit = Field(TransformerInit(), description="weight initialisation (the `model.init` section)")
    heads: int = Field(4, ge=1, description="attention heads; must divide width")
    ffn: Literal["gelu", "relu", "swiglu"] = Field("gelu", description="the FFN (gelu: exact erf)")
    ffn_mult: float = Field(4.0, gt=0, description="FFN hidden size = round(ffn_mult × width), for SwiGLU too")
    final_norm: Optional[bool] = Field(
        None,
        description="a norm after the last block; unset: on for `norm: pre`, off otherwise (so it follows `--set model.norm=…`)",
    )
    rezero: bool = Field(
        False,
        description="α learnable per sublayer, initialised to 0; needs `residual: true` and `residual_scale` 1",
    )

    @model_validator(mode="before")
    @classmethod
    def _activation(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("activation") is not None:
            raise ValueError(
                "model.activation: not a key of block 'transformer' (the FFN's activation is model.ffn: gelu, relu, swiglu)"
            )
        return data

    @field_validator("residual_scale", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return number_or_deepnorm(value, deepnorm=True)

    @model_validator(mode="after")
    def _check(self) -> "Transformer":
        if self.width % self.heads:
            raise ValueError(
                f"model.heads: {self.heads} heads do not divide model.width {self.width} (each head gets width/heads features)"
            )
        if self.rezero and not self.residual:
            raise ValueError("model.rezero: ReZero scales the branch of a residual connection; it needs model.residual: true")
        if self.rezero and self.residual_scale != 1.0:
            raise ValueError(
                f"model.rezero: alpha is learnable and starts at 0, so model.residual_scale must stay 1 (got {self.residual_scale!r})"
            )
        if self.residual_scale == "deepnorm" and (self.norm != "post" or not self.residual):
            raise ValueError(
                f"model.residual_scale: 'deepnorm' needs model.norm: post and model.residual: true "
                f"(got norm {self.norm!r}, residual {self.residual})"
            )
        return self

    @property
    def has_final_norm(self) -> bool:
        return self.final_norm if self.final_norm is not None else self.norm == "pre"

    def check(self, cfg) -> None:
        if cfg.data.dataset is not None:
            raise ValueError(
                f"data.dataset: {cfg.data.dataset!r} is an image dataset; model.block: transformer takes token "
                "sequences (use model.block: conv or mlp)"
            )
        if (
            not cfg.train.steps
            and cfg.loss in ("sum", "mean")
            and self.norm_type == "layernorm"
            and (self.has_final_norm or self.norm == "post")
        ):
            raise ValueError(
                f"loss: {cfg.loss!r} has exactly zero gradient through the LayerNorm at the output "
                "(its outputs sum to the bias); use loss: random or mse"
            )

    def input_shape(self, data) -> tuple[int, ...]:
        return (data.batch_size, data.seq_len, self.width)  # (B, T, C)

    def memory(self, d) -> tuple[int, int, int, dict]:
        C, H, T = self.width, max(1, round(self.ffn_mult * self.width)), d.seq_len
        N = d.batch_size * T  # tokens
        ffn_in = 2 if self.ffn == "swiglu" else 1
        params = (4 * C * C + (1 + ffn_in) * C * H + 8 * C) * (1 if self.share_weights else self.depth)
        per_token = 10 * C + (2 + 2 * ffn_in) * H + self.heads * T  # q k v, norms, FFN hidden, attention weights
        keys = {"params": "model.width", "activations": "data.batch_size (or data.seq_len)"}
        return params, N * per_token * self.depth, 2 * self.depth, keys

    def title(self, data) -> str:
        ffn = f"{self.ffn} FFN×{self.ffn_mult:g}"
        shape = f"{self.depth} × transformer width {self.width}, {self.heads} heads, {ffn}, seq {data.seq_len}"
        res = ("residual ReZero α=0" if self.rezero else residual_words(self)) if self.residual else "no residual"
        norm = norm_words(self) + (" + final norm" if self.has_final_norm else "")
        return f"{shape}, {res}, {norm}, {self.init_words()}"

    def init_words(self) -> str:
        return super().init_words() + (" zero-out" if self.init.zero_out else "")

    def theory_words(self) -> str:
        return f"transformer ({self.norm}-norm, {self.ffn} FFN)"

    def columns(self) -> dict[str, Any]:
        return dict(
            activation=self.ffn,
            residual=self.residual,
            residual_scale=self.residual_scale,
            norm=self.norm,
            norm_type=self.norm_type,
        )
