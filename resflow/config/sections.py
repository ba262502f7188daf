"""What every config section shares: strict validation, the activation names, the `model.init` section.

Its own module so the top-level schema (schema.py) and the block families (families/) both build on
it without importing each other.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

ACTIVATION_NAMES = (
    "identity",
    "tanh",
    "relu",
    "gelu",
    "sigmoid",
    "silu",
    "leaky_relu",
    "elu",
    "selu",
    "softplus",
)  # the builders live in resflow.models.activations (checked against this list by a test)


class Strict(BaseModel):
    """Strict types (no '5' for 5, no 'yes' for true), unknown keys rejected, NaN/inf rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class InitConfig(Strict):
    scheme: Literal["default", "normal", "xavier", "kaiming", "orthogonal", "constant"] = Field(
        "default",
        description="`default` (PyTorch's own), `normal`, `xavier` (Xavier normal), `kaiming` (He normal, "
        "N(0, 2/fan_in)), `orthogonal`, `constant`",
    )
    scale: float = Field(
        1.0,
        ge=0,
        description="`normal`: weight std = scale/√fan_in (scale is σ_w); `constant`: every weight = scale; "
        "the others: multiplies the scheme's weights",
    )
    bias_std: Optional[float] = Field(
        None,
        ge=0,
        description="unset: the scheme's own biases (PyTorch's uniform for `default`, zeros otherwise); "
        "a number: biases ~ N(0, bias_std²), 0 meaning zeros",
    )
    mode: Literal["fan_in", "fan_out"] = Field(
        "fan_in",
        description="`kaiming` only: variance 2/fan_in (preserves the forward pass) or 2/fan_out (the backward)",
    )
    distribution: Literal["normal", "uniform"] = Field(
        "normal",
        description="`kaiming` only: He normal, or uniform with the same variance (torch's kaiming_uniform_)",
    )

    @model_validator(mode="before")
    @classmethod
    def _zero_out(cls, data: Any) -> Any:
        if isinstance(data, dict) and "zero_out" in data and "zero_out" not in cls.model_fields:
            raise ValueError("model.init.zero_out: only for model.block: transformer (it zeroes the output projections)")
        return data

    @model_validator(mode="after")
    def _kaiming_options(self):
        if self.scheme != "kaiming" and (self.mode != "fan_in" or self.distribution != "normal"):
            key = "mode" if self.mode != "fan_in" else "distribution"
            raise ValueError(
                f"model.init.{key}: applies to init.scheme kaiming only (the scheme is {self.scheme!r}); "
                f"leave it unset or set model.init.scheme=kaiming"
            )
        return self
