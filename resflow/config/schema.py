"""The config schema: typed, validated sections (model, data, train) and the `Config` that holds them.

Strict types, unknown keys rejected, frozen: past `load_config` no raw dicts exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resflow.config.limits import MAX_SEEDS
from resflow.config.messages import format_errors, show
from resflow.config.safeyaml import safe_load
from resflow.errors import ConfigError

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
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$"
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit


class _Strict(BaseModel):
    """Strict types (no '5' for 5, no 'yes' for true), unknown keys rejected, NaN/inf rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class InitConfig(_Strict):
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
    zero_out: bool = Field(
        False,
        description="transformer only: zero the attention and FFN output projections (weights and biases) "
        "after the scheme's init (microgpt)",
    )
    mode: Literal["fan_in", "fan_out"] = Field(
        "fan_in",
        description="`kaiming` only: variance 2/fan_in (preserves the forward pass) or 2/fan_out (the backward)",
    )
    distribution: Literal["normal", "uniform"] = Field(
        "normal",
        description="`kaiming` only: He normal, or uniform with the same variance (torch's kaiming_uniform_)",
    )

    @model_validator(mode="after")
    def _kaiming_options(self):
        if self.scheme != "kaiming" and (self.mode != "fan_in" or self.distribution != "normal"):
            key = "mode" if self.mode != "fan_in" else "distribution"
            raise ValueError(
                f"model.init.{key}: applies to init.scheme kaiming only (the scheme is {self.scheme!r}); "
                f"leave it unset or set model.init.scheme=kaiming"
            )
        return self


class ModelConfig(_Strict):
    factory: Optional[str] = Field(
        None,
        description="any model instead of resflow's own: `package.module:callable` (imported: that runs its "
        "code) or a named factory, `hf:gpt2` / `hf:resnet` (Hugging Face, random weights, never downloaded); "
        "then only `kwargs` and `blocks` apply, and data takes `shape` or `tokens`",
    )
    kwargs: Optional[dict[str, Any]] = Field(None, description="`model.factory` only: its keyword arguments")
    blocks: Optional[list[str]] = Field(
        None,
        description="`model.factory` only: glob patterns of the modules measured (at least one), unset means discovered",
    )
    block: Literal["mlp", "transformer", "conv"] = Field(
        "mlp", description="the block stacked `depth` times; `conv`: a CIFAR-style ResNet (He et al. 2016)"
    )
    depth: Optional[int] = Field(
        None,
        ge=1,
        description="number of blocks (required without `model.factory`); conv: the ResNet's total depth 6n + 2",
    )
    width: Optional[int] = Field(
        None,
        ge=1,
        description="features in = features out of every block (required without `model.factory`); conv: stage 1's channels",
    )
    activation: Optional[Literal[ACTIVATION_NAMES]] = Field(  # type: ignore[valid-type]
        None,
        description="mlp and conv, unset means `tanh` (conv: `relu`; transformers: `model.ffn`); `leaky_relu` has slope 0.01",
    )
    residual: bool = Field(False, description="x + α·f(x) instead of f(x)")
    residual_scale: Union[float, Literal["deepnorm"]] = Field(
        1.0,
        description="α; transformer post-norm only: `deepnorm` = DeepNet's norm(a·x + f(x)), a = (2N)^¼, "
        "with the v, out and FFN layers (weights and biases) × β = (8N)^−¼ at init",
    )
    norm: Literal["none", "pre", "post", "conv"] = Field(
        "none", description="where the norm sits; conv: `conv` (a norm at every conv, the default) or `none`"
    )
    norm_type: Literal["layernorm", "rmsnorm", "batchnorm", "groupnorm"] = Field(
        "layernorm",
        description="which norm; `batchnorm` (train-mode batch statistics) and `groupnorm` for mlp and conv; "
        "conv: unset means `batchnorm`",
    )
    norm_groups: Optional[int] = Field(
        None, ge=1, description="`norm_type: groupnorm` only: groups, unset means 8; must divide `width`"
    )
    shortcut: Optional[Literal["pad", "projection"]] = Field(
        None,
        description="conv only, where a stage changes shape: `pad` (option A: strided identity, zero channels "
        "added; the default) or `projection` (option B: 1x1 conv of stride 2 + norm)",
    )
    preactivation: bool = Field(False, description="the branch is W·φ(u) + b instead of φ(W·u + b) (He et al. 2016)")
    bias: bool = Field(True, description="biases in every linear layer (conv: in every conv; unset means false)")
    share_weights: bool = Field(False, description="one block reused at every depth")
    init: InitConfig = Field(InitConfig(), description="weight initialisation (the `model.init` section)")
    # transformer only (None for mlp blocks; defaults filled in for transformers):
    heads: Optional[int] = Field(None, ge=1, description="transformer only: attention heads, unset means 4; must divide width")
    ffn: Optional[Literal["gelu", "relu", "swiglu"]] = Field(
        None, description="transformer only: the FFN, unset means `gelu` (exact erf)"
    )
    ffn_mult: Optional[float] = Field(
        None,
        gt=0,
        description="transformer only: FFN hidden size = round(ffn_mult × width), for SwiGLU too; unset means 4",
    )
    final_norm: Optional[bool] = Field(
        None,
        description="transformer only: a norm after the last block; unset: on for `norm: pre`, off otherwise "
        "(so it follows `--set model.norm=…`)",
    )
    rezero: bool = Field(
        False,
        description="transformer only: α learnable per sublayer, initialised to 0; needs `residual: true` and `residual_scale` 1",
    )

    @model_validator(mode="before")
    @classmethod
    def _block_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("factory") is not None:  # a factory builds the model: none of resflow's own keys apply
            own = [k for k in data if k not in FACTORY_KEYS]
            if own:
                raise ValueError(
                    f"model.{own[0]}: not used with model.factory (the factory builds the model; "
                    f"its arguments go in model.kwargs)"
                )
            return data
        for key in ("depth", "width"):
            if data.get(key) is None and key not in data:
                raise ValueError(f"model.{key}: required key is missing")
        for key in ("kwargs", "blocks"):
            if data.get(key) is not None:
                raise ValueError(f"model.{key}: only with model.factory")
        block = data.get("block", "mlp")
        if block == "transformer":
            for key, value in TRANSFORMER_DEFAULTS.items():
                if data.get(key) is None:
                    data[key] = value
        elif block == "conv":
            for key, value in CONV_DEFAULTS.items():
                if data.get(key) is None:
                    data[key] = value
        elif data.get("activation") is None:
            data["activation"] = "tanh"
        if data.get("norm_type") == "groupnorm" and data.get("norm_groups") is None:
            data["norm_groups"] = 8
        return data

    @field_validator("blocks")
    @classmethod
    def _some_blocks(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:  # [] would measure nothing
            raise ValueError(
                "must name at least one glob pattern, e.g. ['transformer.h.*'], or be left unset to discover the blocks"
            )
        return value

    @field_validator("residual_scale", mode="before")
    @classmethod
    def _number_or_deepnorm(cls, value: Any) -> Any:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or value == "deepnorm"):
            raise ValueError(f"must be a number or 'deepnorm', got {show(value)}")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "ModelConfig":
        if self.factory is not None:
            if not FACTORY_PATTERN.match(self.factory):
                raise ValueError(
                    f"model.factory: expected 'package.module:callable' or a named factory "
                    f"({', '.join(NAMED_FACTORIES)}), got {self.factory!r}"
                )
            return self
        if self.depth is None or self.width is None:
            raise ValueError(f"model.{'depth' if self.depth is None else 'width'}: must be a whole number >= 1, got None")
        if self.block == "transformer":
            _check_transformer(self)
        if self.norm_type in ("batchnorm", "groupnorm") and self.block == "transformer":
            raise ValueError(
                f"model.norm_type: {self.norm_type!r} is for mlp and conv blocks; transformers take layernorm or rmsnorm"
            )
        if self.norm_groups is not None:
            if self.norm_type != "groupnorm":
                raise ValueError(f"model.norm_groups: only for model.norm_type: groupnorm (it is {self.norm_type!r})")
            if self.norm != "none" and self.width % self.norm_groups:
                raise ValueError(f"model.norm_groups: {self.norm_groups} groups do not divide model.width {self.width}")
        if self.block == "conv":
            _check_conv(self)
        else:
            if self.norm == "conv":
                raise ValueError(f"model.norm: 'conv' is only for model.block: conv; {self.block} blocks take none, pre or post")
            if self.shortcut is not None:
                raise ValueError(f"model.shortcut: only for model.block: conv (model.block is {self.block!r})")
        if self.block != "transformer":
            for key in ("heads", "ffn", "ffn_mult", "final_norm"):
                if getattr(self, key) is not None:
                    raise ValueError(f"model.{key}: only transformer blocks have it (model.block is {self.block!r})")
            for key, value in (("rezero", self.rezero), ("init.zero_out", self.init.zero_out)):
                if value:
                    raise ValueError(f"model.{key}: only for model.block: transformer (model.block is {self.block!r})")
            if self.residual_scale == "deepnorm":
                raise ValueError("model.residual_scale: 'deepnorm' is only for model.block: transformer; use a number")
        return self

    @property
    def has_final_norm(self) -> bool:
        return self.final_norm if self.final_norm is not None else self.norm == "pre"


TRANSFORMER_DEFAULTS = dict(heads=4, ffn="gelu", ffn_mult=4.0)
FACTORY_KEYS = ("factory", "kwargs", "blocks")
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module:callable (hf:<name> for the named ones)
NAMED_FACTORIES = ("hf:gpt2", "hf:resnet")  # resflow.models.hf (checked against it by a test)


# He et al. 2016's CIFAR ResNets: ReLU, BatchNorm after every conv, convs without bias, option A shortcuts
CONV_DEFAULTS = dict(activation="relu", norm="conv", norm_type="batchnorm", bias=False, shortcut="pad")


def conv_blocks_per_stage(depth: int) -> int | None:
    """n of a CIFAR-style ResNet of total depth 6n + 2, or None if `depth` is not of that form."""
    return (depth - 2) // 6 if depth >= 8 and (depth - 2) % 6 == 0 else None


def _check_conv(m: ModelConfig) -> None:
    """Cross-field rules of conv ResNets; each error is one line naming the keys."""
    if conv_blocks_per_stage(m.depth) is None:
        near = sorted({max(8, 6 * round((m.depth - 2) / 6) + 2), max(8, 6 * ((m.depth - 2) // 6) + 2 + 6)})
        raise ValueError(
            f"model.depth: a conv ResNet has 6n + 2 layers (a stem conv, 3 stages of n blocks of two convs, "
            f"a linear head): 8, 14, 20, 32, 44, 56, 110, ...; got {m.depth} (nearest: {', '.join(map(str, near))})"
        )
    if m.norm not in ("none", "conv"):
        raise ValueError(
            f"model.norm: conv blocks take 'conv' (a norm at every conv; before it with "
            f"model.preactivation: true) or 'none', got {m.norm!r}"
        )
    if m.norm != "none" and m.norm_type not in ("batchnorm", "groupnorm"):
        raise ValueError(
            f"model.norm_type: {m.norm_type!r} normalises the last dimension; conv feature maps "
            "(batch, channels, height, width) take batchnorm or groupnorm"
        )
    if m.share_weights:
        raise ValueError("model.share_weights: a conv ResNet's stages have different widths; it cannot share one block")


def _check_transformer(m: ModelConfig) -> None:
    """Cross-field rules of transformer blocks; each error is one line naming the keys."""
    if m.width % m.heads:
        raise ValueError(
            f"model.heads: {m.heads} heads do not divide model.width {m.width} (each head gets width/heads features)"
        )
    if m.activation is not None:
        raise ValueError(
            "model.activation: not used by transformer blocks; the FFN's activation is model.ffn (gelu, relu, swiglu)"
        )
    if m.preactivation:
        raise ValueError("model.preactivation: only for mlp and conv blocks")
    if m.rezero and not m.residual:
        raise ValueError("model.rezero: ReZero scales the branch of a residual connection; it needs model.residual: true")
    if m.rezero and m.residual_scale != 1.0:
        raise ValueError(
            f"model.rezero: alpha is learnable and starts at 0, so model.residual_scale must stay 1 (got {m.residual_scale!r})"
        )
    if m.residual_scale == "deepnorm" and (m.norm != "post" or not m.residual):
        raise ValueError(
            f"model.residual_scale: 'deepnorm' needs model.norm: post and model.residual: true (got norm {m.norm!r}, residual {m.residual})"
        )


DATASET_NAMES = ("digits",)  # the loaders live in resflow.measure.datasets (checked against this list by a test)


class DataConfig(_Strict):
    batch_size: int = Field(32, ge=1, description="inputs per batch")
    input: Literal["normal", "ones", "tokens"] = Field(
        "normal",
        description="`normal`: x ~ N(0, input_scale²); `ones`: every entry = input_scale; `tokens` "
        "(transformer only): random token ids embedded by a fixed random table with N(0, input_scale²) "
        "entries (data, not a parameter)",
    )
    input_scale: float = Field(1.0, ge=0, description="the input's scale (see `data.input`)")
    seq_len: Optional[int] = Field(
        None,
        ge=1,
        description="transformer only: tokens per sequence, unset means 32; the input is (batch, seq_len, width)",
    )
    vocab: Optional[int] = Field(None, ge=1, description="`data.input: tokens` only: vocabulary size, unset means 256")
    shape: Optional[list[Annotated[int, Field(ge=1)]]] = Field(
        None,
        min_length=1,
        description="`model.factory` only: the input's whole shape, batch first, entries N(0, input_scale²)",
    )
    tokens: Optional["TokensConfig"] = Field(
        None,
        description="`model.factory` only, instead of `shape`: token ids for a language model, "
        "(batch_size, seq_len) drawn uniformly from vocab",
    )
    dataset: Optional[Literal[DATASET_NAMES]] = Field(  # type: ignore[valid-type]
        None,
        description="a real dataset, bundled (never downloaded): `digits` = scikit-learn's 8x8 handwritten "
        "digits (pip install 'resflow[data]'), images for conv, flattened for mlp; classification with "
        "cross-entropy (docs/conv-resnets.md)",
    )


class TokensConfig(_Strict):
    vocab: int = Field(ge=1, description="vocabulary size: ids are drawn from 0 … vocab−1")
    seq_len: int = Field(ge=1, description="tokens per sequence")


TASK_NAMES = ("teacher", "sequence", "classify")  # the tasks live in resflow.train.tasks (checked against this list by a test)
TASK_FOR_BLOCK = {
    "mlp": "teacher",
    "transformer": "sequence",
    "conv": "classify",
}  # the task each block trains on without a dataset


def default_task(block: Any, dataset: Any) -> str:
    """The training task a config gets when train.task is unset: classify on a dataset, else the block's."""
    if dataset is not None:
        return "classify"
    return TASK_FOR_BLOCK.get(block, "teacher") if isinstance(block, str) else "teacher"


SEQUENCE_DEFAULTS = dict(vocab=16, chain_temperature=0.5)


def record_steps(steps: int, every: int | None) -> list[int]:
    """The steps a training run records: 0, k, 2k, ... below `steps`, and `steps` itself;
    k = every (train.record_every) or max(1, steps // 20)."""
    k = every or max(1, steps // 20)
    return sorted(set(range(0, steps, k)) | {steps})


class TrainConfig(_Strict):
    steps: int = Field(0, ge=0, description="optimizer steps; 0: measure at initialisation only (no training)")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="torch.optim's, with its default betas and eps")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay, as the optimizer defines it")
    warmup: int = Field(0, ge=0, description="linear warmup: step s uses lr·min(1, (s+1)/warmup); at most `train.steps`")
    batch_size: Optional[int] = Field(None, ge=1, description="a fresh batch every step; unset means `data.batch_size`")
    record_every: Optional[int] = Field(
        None,
        ge=1,
        description="record grads/params at steps 0, k, 2k, … and the last step; unset means max(1, steps // 20)",
    )
    task: Optional[Literal[TASK_NAMES]] = Field(  # type: ignore[valid-type]
        None,
        description="`teacher` (mlp): regress a fixed random tanh network (MSE); `sequence` (transformer): "
        "next-token prediction on a fixed random Markov chain (cross-entropy); `classify` (mlp, conv): "
        "`data.dataset`'s labels (cross-entropy). Unset: `classify` with a dataset, otherwise the one "
        "`model.block` allows. The top-level `loss` is not used when training",
    )
    eval_batches: int = Field(
        4, ge=0, description="held-out batches, evaluated at every recorded step (classify: the test split instead)"
    )
    vocab: Optional[int] = Field(None, ge=2, description="`sequence` only: tokens (states of the chain), unset means 16")
    chain_temperature: Optional[float] = Field(
        None,
        gt=0,
        description="`sequence` only: each row of the transition matrix is softmax(N(0, 1)/chain_temperature), "
        "unset means 0.5; lower is more predictable (a lower loss floor)",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.steps and self.warmup > self.steps:
            raise ValueError(f"train.warmup: must be at most train.steps ({self.steps}), got {self.warmup}")
        if self.task != "sequence":
            for key in ("vocab", "chain_temperature"):
                if getattr(self, key) is not None:
                    raise ValueError(f"train.{key}: only for train.task: sequence (train.task is {self.task!r})")
        return self


class Config(_Strict):
    name: str = Field(
        "resflow",
        pattern=NAME_PATTERN,
        description="the run's name: the `variant` column and the default results dir; a config file's default is its stem",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the first seed")
    seeds: int = Field(1, ge=1, le=MAX_SEEDS, description="runs seeds seed, seed+1, …, seed+seeds−1")
    dtype: Literal["float32", "float64"] = Field("float32", description="the dtype of weights and activations")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto`: CUDA if present, else the CPU")
    loss: Literal["sum", "mean", "mse", "random", "cross_entropy"] = Field(
        "random",
        description="`random` = ⟨v, output⟩ for a fixed Gaussian v, the random output direction the mean-field "
        "theory assumes; `sum` of outputs (the seeds' `out.backward()`: not a random direction, it couples to the "
        "weights and biases the ratio), `mean`, `mse` against a fixed random target, `cross_entropy` against "
        "`data.dataset`'s labels (the default with a dataset)",
    )
    model: ModelConfig = Field(description="the network (the `model` section)")
    data: DataConfig = Field(DataConfig(), description="the input (the `data` section)")
    train: TrainConfig = Field(
        TrainConfig(), description="training (the `train` section); `steps: 0`, the default, measures at initialisation only"
    )

    @model_validator(mode="before")
    @classmethod
    def _data_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            return data
        out = dict(data)
        if data["model"].get("factory") is not None:  # any model: the random loss <v, output> fits every output
            out.setdefault("loss", "random")
            return out
        train = data.get("train", {})
        if isinstance(train, dict):  # the task the block trains on, and the sequence task's defaults
            train = dict(train)
            block = data["model"].get("block", "mlp")
            section = data.get("data")
            dataset = section.get("dataset") if isinstance(section, dict) else None
            if train.get("task") is None:  # an invalid block is reported by model.block's own check
                train["task"] = default_task(block, dataset)
            if train["task"] == "sequence":
                for key, value in SEQUENCE_DEFAULTS.items():
                    if train.get(key) is None:
                        train[key] = value
            out["train"] = train
        section = data.get("data", {})
        if not isinstance(section, dict):
            return out
        if section.get("dataset") is not None and data.get("loss") is None:
            out["loss"] = "cross_entropy"
        section = dict(section)
        if data["model"].get("block") == "transformer" and section.get("seq_len") is None:
            section["seq_len"] = 32
        if section.get("input") == "tokens" and section.get("vocab") is None:
            section["vocab"] = 256
        return {**out, "data": section}

    @model_validator(mode="after")
    def _check_data(self) -> "Config":
        m, d = self.model, self.data
        if m.factory is not None:
            return self._check_factory()
        for key in ("shape", "tokens"):
            if getattr(d, key) is not None:
                raise ValueError(f"data.{key}: only with model.factory (resflow's own models take data.batch_size)")
        if d.dataset is not None and m.block == "transformer":
            raise ValueError(
                f"data.dataset: {d.dataset!r} is an image dataset; model.block: transformer takes token "
                "sequences (use model.block: conv or mlp)"
            )
        if self.loss == "cross_entropy" and d.dataset is None:
            raise ValueError("loss: 'cross_entropy' needs labels: set data.dataset (digits)")
        batch = (self.train.batch_size or d.batch_size) if self.train.steps else d.batch_size
        if m.norm != "none" and m.norm_type == "batchnorm" and batch < 2:
            key = "train.batch_size" if self.train.steps and self.train.batch_size else "data.batch_size"
            raise ValueError(
                f"{key}: model.norm_type: batchnorm normalises over the batch (train mode, as a real "
                f"step), which needs at least 2 examples; got {batch}"
            )
        if (
            m.block == "mlp"
            and m.norm == "post"
            and m.norm_type in ("batchnorm", "groupnorm")
            and self.loss in ("sum", "mean")
            and d.dataset is None
        ):
            raise ValueError(
                f"loss: {self.loss!r} has exactly zero gradient through the {m.norm_type} at the output "
                "(its outputs sum to a constant); use loss: random or mse"
            )
        if m.block != "transformer":
            if d.seq_len is not None:
                raise ValueError(f"data.seq_len: only for model.block: transformer (model.block is {m.block!r})")
            if d.input == "tokens":
                raise ValueError(f"data.input: 'tokens' is only for model.block: transformer (model.block is {m.block!r})")
        elif (
            not self.train.steps
            and self.loss in ("sum", "mean")
            and m.norm_type == "layernorm"
            and (m.has_final_norm or m.norm == "post")
        ):
            raise ValueError(
                f"loss: {self.loss!r} has exactly zero gradient through the LayerNorm at the output "
                "(its outputs sum to the bias); use loss: random or mse"
            )
        if d.vocab is not None and d.input != "tokens":
            raise ValueError(f"data.vocab: only for data.input: tokens (data.input is {d.input!r})")
        task = self.train.task
        if task == "classify" or d.dataset is not None:
            if self.train.steps and d.dataset is None:
                raise ValueError(
                    f"train.steps: training {'a conv net' if m.block == 'conv' else 'with train.task: classify'} "
                    "learns a dataset's labels (train.task: classify); set data.dataset (digits)"
                )
            if d.dataset is not None and task != "classify":
                raise ValueError(f"train.task: {task!r} has its own data; with data.dataset use train.task: classify")
            if m.block == "transformer":
                raise ValueError("train.task: 'classify' is for mlp and conv blocks; transformers train on train.task: sequence")
        elif task != TASK_FOR_BLOCK[m.block]:
            allowed = TASK_FOR_BLOCK[m.block]
            why = (
                "regresses vectors of width model.width; transformers take token sequences"
                if task == "teacher"
                else "needs a transformer (token sequences in, next-token logits out)"
            )
            raise ValueError(f"train.task: {task!r} {why}; with model.block: {m.block} use train.task: {allowed}")
        if task == "sequence" and self.train.steps and d.input == "tokens":
            raise ValueError(
                "data.input: 'tokens' is not used by train.task: sequence, which draws its own tokens "
                "(train.vocab) and learns their embedding; drop data.input"
            )
        return self

    def _check_factory(self) -> "Config":
        d = self.data
        if self.train.steps:
            raise ValueError(
                "train.steps: a model.factory model is measured at initialisation only; "
                "to follow it in training, use resflow.watch in your own loop"
            )
        if (d.shape is None) == (d.tokens is None):
            raise ValueError(
                "data: a model.factory model needs exactly one of data.shape (e.g. [8, 3, 224, 224]) "
                "or data.tokens (e.g. {vocab: 50257, seq_len: 128})"
            )
        for key in ("seq_len", "vocab"):
            if getattr(d, key) is not None:
                raise ValueError(f"data.{key}: not used with model.factory (use data.tokens)")
        if self.loss == "cross_entropy":  # (it failed on the model's output, after the model was built)
            raise ValueError(
                "loss: 'cross_entropy' needs labels, and a model.factory model is measured on random inputs; "
                "use loss: random, sum, mean or mse"
            )
        if d.input != "normal":
            raise ValueError(f"data.input: {d.input!r} is not used with model.factory (data.shape is N(0, input_scale^2))")
        return self

    @model_validator(mode="after")
    def _check_seed_range(self) -> "Config":
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(
                f"seed: seeds {self.seed} … {self.seed + self.seeds - 1} pass the largest seed, {MAX_SEED} "
                f"(2^63 − 1); with seeds: {self.seeds} the first seed is at most {MAX_SEED - self.seeds + 1}"
            )
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config, as plain YAML-able data (no `train` section when not training)."""
        data = self.model_dump(mode="json")
        if not self.train.steps:
            del data["train"]  # measuring at initialisation: config.yaml as before training existed
        if self.model.factory is not None:  # only the keys that mean something for a factory's model
            data["model"] = {k: data["model"][k] for k in FACTORY_KEYS if data["model"][k] is not None}
            data["data"] = {k: v for k, v in data["data"].items() if v is not None and k not in ("input", "seq_len", "vocab")}
        else:
            for key in FACTORY_KEYS:
                del data["model"][key]
            for key in ("shape", "tokens"):
                del data["data"][key]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: list[str] | dict[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied and validated again."""
        return validate(self.to_dict(), overrides=overrides, source="config")


# ---------------------------------------------------------------------------------------------
# Overrides and validation


def parse_override(item: str, flag: str = "--set") -> tuple[str, Any]:
    """'model.depth=100' -> ('model.depth', 100); the value is read as YAML (true, 1e-3, [1, 2]).
    `flag`: the option the item came from, as its errors name it (--set, or --over for an axis)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    example = "--over model.depth=1,2,5" if flag == "--over" else f"{flag} model.depth=100"
    if not sep or not key:
        raise ConfigError(f"{flag} {item!r}: expected KEY={'V1,V2,...' if flag == '--over' else 'VALUE'}, e.g. {example}")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"{flag} {item!r}: {key!r} is not a dotted key such as model.depth")
    try:
        value = safe_load(raw) if raw.strip() else raw
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(f"{flag} {item!r}: cannot read the value {raw!r} (values are read as YAML)") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; unknown keys are caught later by validation.

    Only the sections on an override's path are copied: `data` is never modified, and a huge value
    elsewhere (YAML aliases can make one) is never walked.
    """
    out = dict(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: {prefix} is a value, not a section, so it has no key {parts[depth + 1]!r}")
            node[part] = child = dict(child)  # a copy, so the caller's dict is untouched
            node = child
        node[parts[-1]] = value
    return out


def validate(
    data: dict[str, Any],
    overrides: list[str] | dict[str, Any] | None = None,
    source: str = "config",
) -> Config:
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(item) for item in overrides)
    overrides = overrides or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values, got a {type(data).__name__}")
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, set(overrides), Config)) from None
