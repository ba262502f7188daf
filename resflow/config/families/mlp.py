"""`model.block: mlp` — a stack of width -> width linear layers with an activation, optional residual
and norm (resflow.models.mlp builds it; resflow.theory's mean-field recursions cover it)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from resflow.config.families.base import Block, check_batch_norm, check_norm_groups, norm_words, residual_words
from resflow.config.messages import show
from resflow.config.sections import ACTIVATION_NAMES, InitConfig

BLOCK_DESCRIPTION = (
    "the block family stacked `depth` times: `mlp`, `transformer`, `conv` (a CIFAR-style ResNet, He et al. "
    "2016) or `highway` (Srivastava et al. 2015); each family takes its own keys (below)"
)


class Mlp(Block):
    name = "mlp"
    plural = "MLP stacks"
    task = "teacher"
    mean_field = True
    batched_seeds = True
    defaults = {"activation": "tanh"}

    block: Literal["mlp"] = Field("mlp", description=BLOCK_DESCRIPTION)
    depth: int = Field(ge=1, description="number of blocks")
    width: int = Field(ge=1, description="features in = features out of every block")
    activation: Literal[ACTIVATION_NAMES] = Field("tanh", description="φ; `leaky_relu` has slope 0.01")  # type: ignore[valid-type]
    residual: bool = Field(False, description="x + α·f(x) instead of f(x)")
    residual_scale: float = Field(1.0, description="α")
    norm: Literal["none", "pre", "post"] = Field("none", description="where the norm sits")
    norm_type: Literal["layernorm", "rmsnorm", "batchnorm", "groupnorm"] = Field(
        "layernorm", description="which norm; `batchnorm` uses train-mode batch statistics"
    )
    norm_groups: Optional[int] = Field(
        None, ge=1, description="`norm_type: groupnorm` only: groups, unset means 8; must divide `width`"
    )
    preactivation: bool = Field(False, description="the branch is W·φ(u) + b instead of φ(W·u + b) (He et al. 2016)")
    bias: bool = Field(True, description="biases in every linear layer")
    share_weights: bool = Field(False, description="one block reused at every depth")
    init: InitConfig = Field(InitConfig(), description="weight initialisation (the `model.init` section)")

    @model_validator(mode="before")
    @classmethod
    def _groups(cls, data: Any) -> Any:
        return groups_default(data)

    @field_validator("residual_scale", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return number_or_deepnorm(value, deepnorm=False)

    @model_validator(mode="after")
    def _check(self) -> "Mlp":
        check_norm_groups(self)
        return self

    def check(self, cfg) -> None:
        check_batch_norm(self, cfg)
        if (
            self.norm == "post"
            and self.norm_type in ("batchnorm", "groupnorm")
            and cfg.loss in ("sum", "mean")
            and cfg.data.dataset is None
        ):
            raise ValueError(
                f"loss: {cfg.loss!r} has exactly zero gradient through the {self.norm_type} at the output "
                "(its outputs sum to a constant); use loss: random or mse"
            )

    def memory(self, d) -> tuple[int, int, int, dict]:
        W, N = self.width, d.batch_size
        norm = 2 * W if self.norm != "none" else 0
        params = (W * W + (W if self.bias else 0) + norm) * (1 if self.share_weights else self.depth)
        per_block = N * W * (5 + (1 if self.norm != "none" else 0))  # x, W x, phi, sum, recorder grad (+ norm)
        return params, per_block * self.depth, self.depth, {"params": "model.width", "activations": "data.batch_size"}

    def title(self, data) -> str:
        shape = f"{self.depth} × mlp width {self.width}, {self.activation}"
        if data.dataset is not None:
            shape += f", {data.dataset}"
        return f"{shape}, {residual_words(self)}, {norm_words(self)}, {self.init_words()}"

    def theory_words(self) -> str:
        return self.activation

    def columns(self) -> dict[str, Any]:
        return dict(
            activation=self.activation,
            residual=self.residual,
            residual_scale=self.residual_scale,
            norm=self.norm,
            norm_type=self.norm_type,
        )


def groups_default(data: Any) -> Any:
    """`norm_type: groupnorm` without `norm_groups`: 8 groups."""
    if isinstance(data, dict) and data.get("norm_type") == "groupnorm" and data.get("norm_groups") is None:
        return {**data, "norm_groups": 8}
    return data


def number_or_deepnorm(value: Any, deepnorm: bool) -> Any:
    """model.residual_scale: a number (or, for transformers, the word 'deepnorm')."""
    if value == "deepnorm" and not deepnorm:
        raise ValueError("'deepnorm' is only for model.block: transformer; use a number")
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or value == "deepnorm"):
        raise ValueError(f"must be a number or 'deepnorm', got {show(value)}")
    return value
