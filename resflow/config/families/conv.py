"""`model.block: conv` — CIFAR-style ResNets (He et al. 2016, §4.2) of depth 6n + 2, always a
classifier of images (resflow.models.conv builds it)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from resflow.config.families.base import Block, check_batch_norm, check_norm_groups, doubling_depths, residual_words
from resflow.config.families.mlp import BLOCK_DESCRIPTION, groups_default, number_or_deepnorm
from resflow.config.limits import IMAGES
from resflow.config.sections import ACTIVATION_NAMES, InitConfig


def conv_blocks_per_stage(depth: int) -> int | None:
    """n of a CIFAR-style ResNet of total depth 6n + 2, or None if `depth` is not of that form."""
    return (depth - 2) // 6 if depth >= 8 and (depth - 2) % 6 == 0 else None


class Conv(Block):
    name = "conv"
    plural = "conv ResNets"
    task = "classify"
    images = True
    always_classifier = True
    # He et al. 2016's CIFAR ResNets: ReLU, BatchNorm after every conv, convs without bias, option A shortcuts
    defaults = {"activation": "relu", "norm": "conv", "norm_type": "batchnorm", "bias": False, "shortcut": "pad"}

    block: Literal["conv"] = Field("conv", description=BLOCK_DESCRIPTION)
    depth: int = Field(ge=1, description="the ResNet's total depth 6n + 2 (8, 14, 20, 32, 44, 56, 110, …)")
    width: int = Field(ge=1, description="stage 1's channels (stages 2 and 3: 2× and 4×)")
    activation: Literal[ACTIVATION_NAMES] = Field("relu", description="φ after each conv (or before, pre-activation)")  # type: ignore[valid-type]
    residual: bool = Field(False, description="s(x) + α·f(x) instead of f(x)")
    residual_scale: float = Field(1.0, description="α")
    norm: Literal["none", "conv"] = Field("conv", description="`conv`: a norm at every conv; `none`: no norms")
    norm_type: Literal["layernorm", "rmsnorm", "batchnorm", "groupnorm"] = Field(
        "batchnorm", description="which norm over feature maps: `batchnorm` (train-mode batch statistics) or `groupnorm`"
    )
    norm_groups: Optional[int] = Field(
        None, ge=1, description="`norm_type: groupnorm` only: groups, unset means 8; must divide `width`"
    )
    shortcut: Literal["pad", "projection"] = Field(
        "pad",
        description="where a stage changes shape: `pad` (option A: strided identity, zero channels added) or "
        "`projection` (option B: 1x1 conv of stride 2 + norm)",
    )
    preactivation: bool = Field(False, description="norm and φ before each conv (He et al. 2016, ResNet-v2)")
    bias: bool = Field(False, description="biases in every conv")
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
    def _check(self) -> "Conv":
        check_norm_groups(self)
        if conv_blocks_per_stage(self.depth) is None:
            near = sorted({max(8, 6 * round((self.depth - 2) / 6) + 2), max(8, 6 * ((self.depth - 2) // 6) + 2 + 6)})
            raise ValueError(
                f"model.depth: a conv ResNet has 6n + 2 layers (a stem conv, 3 stages of n blocks of two convs, "
                f"a linear head): 8, 14, 20, 32, 44, 56, 110, ...; got {self.depth} (nearest: {', '.join(map(str, near))})"
            )
        if self.norm != "none" and self.norm_type not in ("batchnorm", "groupnorm"):
            raise ValueError(
                f"model.norm_type: {self.norm_type!r} normalises the last dimension; conv feature maps "
                "(batch, channels, height, width) take batchnorm or groupnorm"
            )
        return self

    def check(self, cfg) -> None:
        check_batch_norm(self, cfg)

    def default_depths(self) -> list[int]:
        return [6 * n + 2 for n in doubling_depths((self.depth - 2) // 6)]

    def memory(self, d) -> tuple[int, int, int, dict]:
        (C, H, W), classes = IMAGES[d.dataset]
        N, w, n = d.batch_size, self.width, (self.depth - 2) // 6
        norm = 2 if self.norm != "none" else 0  # a norm's weight and bias per channel
        params = 9 * C * w + norm * w + 4 * w * classes + classes  # stem, head
        acts = N * w * H * W * 3  # the stem's conv, norm, act
        c_in, pixels = w, H * W
        for stage, c in enumerate((w, 2 * w, 4 * w)):
            if stage:
                pixels = -(-H // 2**stage) * -(-W // 2**stage)
            for i in range(n):
                params += 9 * c_in * c + 9 * c * c + 2 * norm * c
                if c_in != c and self.residual and self.shortcut == "projection":
                    params += c_in * c + norm * c
                acts += N * c * pixels * 8  # conv, norm, act, conv, norm, sum, act, the recorder's gradient
                c_in = c
        return params, acts, 3 * n, {"params": "model.width", "activations": "data.batch_size"}

    def title(self, data) -> str:
        act = f"{self.activation}, pre-activation" if self.preactivation else self.activation
        shape = f"conv ResNet depth {self.depth} (3 stages × {(self.depth - 2) // 6} blocks) width {self.width}, {act}"
        if data.dataset is not None:
            shape += f", {data.dataset}"
        res = residual_words(self) + (f" ({self.shortcut} shortcut)" if self.residual else "")
        norm = f"{self.norm}-{self.norm_type}" if self.norm != "none" else "no norm"
        return f"{shape}, {res}, {norm}, {self.init_words()}"

    def theory_words(self) -> str:
        return f"conv ResNet, {self.activation}, {'residual' if self.residual else 'plain (no residual)'}"

    def columns(self) -> dict[str, Any]:
        return dict(
            activation=self.activation,
            residual=self.residual,
            residual_scale=self.residual_scale,
            norm=self.norm,
            norm_type=self.norm_type,
        )
