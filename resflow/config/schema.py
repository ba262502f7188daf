"""The config schema: typed, validated sections (model, data, train) and the `Config` that holds them.

Strict types, unknown keys rejected, frozen: past `load_config` no raw dicts exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, model_validator

from resflow.config.families import FAMILIES, ModelSection, family_name, unknown_block
from resflow.config.families.factory import FACTORY_KEYS, FACTORY_PATTERN, NAMED_FACTORIES  # noqa: F401 (re-exported)
from resflow.config.limits import MAX_SEEDS
from resflow.config.messages import format_errors
from resflow.config.safeyaml import safe_load
from resflow.config.sections import ACTIVATION_NAMES, InitConfig, Strict  # noqa: F401 (re-exported)
from resflow.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$"
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit


DATASET_NAMES = ("digits",)  # the loaders live in resflow.measure.datasets (checked against this list by a test)


class DataConfig(Strict):
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


class TokensConfig(Strict):
    vocab: int = Field(ge=1, description="vocabulary size: ids are drawn from 0 … vocab−1")
    seq_len: int = Field(ge=1, description="tokens per sequence")


TASK_NAMES = ("teacher", "sequence", "classify")  # the tasks live in resflow.train.tasks (checked against this list by a test)


def default_task(block: Any, dataset: Any) -> str:
    """The training task a config gets when train.task is unset: classify on a dataset, else the block's."""
    if dataset is not None:
        return "classify"
    family = FAMILIES.get(block) if isinstance(block, str) else None
    return (family.task if family is not None else None) or "teacher"


SEQUENCE_DEFAULTS = dict(vocab=16, chain_temperature=0.5)


def record_steps(steps: int, every: int | None) -> list[int]:
    """The steps a training run records: 0, k, 2k, ... below `steps`, and `steps` itself;
    k = every (train.record_every) or max(1, steps // 20)."""
    k = every or max(1, steps // 20)
    return sorted(set(range(0, steps, k)) | {steps})


class TrainConfig(Strict):
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


class Config(Strict):
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
    model: ModelSection = Field(description="the network (the `model` section): its keys depend on `model.block`")
    data: DataConfig = Field(DataConfig(), description="the input (the `data` section)")
    train: TrainConfig = Field(
        TrainConfig(), description="training (the `train` section); `steps: 0`, the default, measures at initialisation only"
    )

    @model_validator(mode="before")
    @classmethod
    def _data_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            return data
        name = family_name(data["model"])
        if name is None:
            raise ValueError(unknown_block(data["model"].get("block")))
        family = FAMILIES[name]
        out = dict(data)
        if name == "factory":  # any model: the random loss <v, output> fits every output
            out.setdefault("loss", "random")
            return out
        train = data.get("train", {})
        section = data.get("data")
        dataset = section.get("dataset") if isinstance(section, dict) else None
        if isinstance(train, dict):  # the task the block trains on, and the sequence task's defaults
            train = dict(train)
            if train.get("task") is None:
                train["task"] = default_task(name, dataset)
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
        if family.sequences and section.get("seq_len") is None:
            section["seq_len"] = 32
        if section.get("input") == "tokens" and section.get("vocab") is None:
            section["vocab"] = 256
        return {**out, "data": section}

    @model_validator(mode="after")
    def _check_data(self) -> "Config":
        m, d = self.model, self.data
        if m.name == "factory":
            return self._check_factory()
        for key in ("shape", "tokens"):
            if getattr(d, key) is not None:
                raise ValueError(f"data.{key}: only with model.factory (resflow's own models take data.batch_size)")
        if self.loss == "cross_entropy" and d.dataset is None:
            raise ValueError("loss: 'cross_entropy' needs labels: set data.dataset (digits)")
        m.check(self)
        if not m.sequences:
            if d.seq_len is not None:
                raise ValueError(f"data.seq_len: only for model.block: transformer (model.block is {m.block!r})")
            if d.input == "tokens":
                raise ValueError(f"data.input: 'tokens' is only for model.block: transformer (model.block is {m.block!r})")
        if d.vocab is not None and d.input != "tokens":
            raise ValueError(f"data.vocab: only for data.input: tokens (data.input is {d.input!r})")
        task = self.train.task
        if task == "classify" or d.dataset is not None:
            if self.train.steps and d.dataset is None:
                raise ValueError(
                    f"train.steps: training {'a conv net' if m.always_classifier else 'with train.task: classify'} "
                    "learns a dataset's labels (train.task: classify); set data.dataset (digits)"
                )
            if d.dataset is not None and task != "classify":
                raise ValueError(f"train.task: {task!r} has its own data; with data.dataset use train.task: classify")
            if not m.classifies:
                takes = [name for name, f in FAMILIES.items() if f.classifies]
                raise ValueError(
                    f"train.task: 'classify' is for {', '.join(takes[:-1])} and {takes[-1]} blocks; "
                    f"{m.plural} train on train.task: {m.task}"
                )
        elif task != m.task:
            why = (
                f"regresses vectors of width model.width; {m.plural} take token sequences"
                if task == "teacher"
                else "needs a transformer (token sequences in, next-token logits out)"
            )
            raise ValueError(f"train.task: {task!r} {why}; with model.block: {m.block} use train.task: {m.task}")
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
