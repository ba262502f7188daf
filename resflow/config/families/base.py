"""What a block family declares: the `Family` base of every `model` section.

A family's section is a pydantic model whose fields are its keys (and no others). The class also
answers, for the rest of resflow, everything that depends on the family: the task it trains on, the
shape of its input, its memory estimate, its words in titles and tables, and whether the mean-field
theory covers it. Callers ask `cfg.model`, never compare `cfg.model.block` to a name.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import model_validator

from resflow.config.sections import Strict


def doubling_depths(depth: int) -> list[int]:
    """1, 2, 4, 8, ... below `depth`, then `depth` itself: a sweep's default depth axis."""
    out, d = [], 1
    while d < depth:
        out.append(d)
        d *= 2
    return out + [depth]


class Family(Strict):
    """The section of one block family. Subclasses set the class attributes below and add their keys."""

    name: ClassVar[str]  # the `model.block` word (`factory` for model.factory)
    plural: ClassVar[str]  # the family in a sentence: "MLP stacks", "conv ResNets"
    task: ClassVar[str | None] = None  # train.task without a dataset (None: no built-in training)
    classifies: ClassVar[bool] = True  # can train.task: classify on a dataset
    images: ClassVar[bool] = False  # a dataset's examples as images (C, H, W), else flattened
    always_classifier: ClassVar[bool] = False  # built with a stem and a head even without a dataset
    sequences: ClassVar[bool] = False  # takes (batch, seq_len, width): data.seq_len and tokens apply
    mean_field: ClassVar[bool] = False  # resflow.theory's recursions cover it
    batched_seeds: ClassVar[bool] = False  # resflow.measure.batched runs its seeds side by side
    defaults: ClassVar[dict[str, Any]] = {}  # keys given as null (or absent) take these values
    foreign: ClassVar[frozenset[str]] = frozenset()  # every family's keys (set by the registry)

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        """Another family's key is refused naming this family; a null one is unset (old config.yaml
        files wrote every key of every family, unset ones as null)."""
        if not isinstance(data, dict):
            return data
        own = list(cls.model_fields)
        out = {}
        for key, value in data.items():
            if key in own or not isinstance(key, str):
                out[key] = value
            elif value is None and key in cls.foreign:
                continue
            elif key in cls.foreign:
                raise ValueError(f"model.{key}: not a key of block {cls.name!r} (its keys: {', '.join(own)})")
            else:
                close = difflib.get_close_matches(key, own, n=1)
                hint = f"; did you mean 'model.{close[0]}'?" if close else ""
                raise ValueError(f"model.{key}: unknown key{hint} (block {cls.name!r} takes: {', '.join(own)})")
        for key, value in cls.defaults.items():
            if out.get(key) is None:
                out[key] = value
        return out

    # --- what the rest of resflow asks a family (overridden where a family differs) ---

    def check(self, cfg) -> None:
        """Rules across sections (data, train, loss) for this family; raise ValueError naming the key."""

    def input_shape(self, data) -> tuple[int, ...]:
        """The input batch's shape when the model is not a classifier."""
        return (data.batch_size, self.width)  # (B, W)

    def example_shape(self, image: tuple[int, ...]) -> tuple[int, ...]:
        """One dataset example as this family takes it: the image (C, H, W), or its pixels flattened."""
        if self.images:
            return tuple(image)
        n = 1
        for size in image:
            n *= size
        return (n,)

    def default_depths(self) -> list[int]:
        return doubling_depths(self.depth)

    def memory(self, data) -> tuple[int, int, int, dict]:
        """(parameters, activations kept per seed, recorded sites, term -> key that shrinks it)."""
        raise NotImplementedError

    def title(self, data) -> str:
        """The config in words for `run`'s title, up to the init (`run_title` adds name, dtype, seeds)."""
        raise NotImplementedError

    def theory_words(self) -> str:
        """The family and its main choices, for `resflow theory`'s first line."""
        return self.name

    def columns(self) -> dict[str, Any]:
        """The config columns every results row carries: activation, residual, residual_scale, norm,
        norm_type (None where the family has no such key)."""
        raise NotImplementedError

    def init_words(self) -> str:
        return f"init {self.init.scheme}×{self.init.scale:g}"


class Block(Family):
    """A family resflow builds itself (all but the factory family): `depth` blocks of `width`."""

    factory: ClassVar[None] = None  # (read as `cfg.model.factory is None`: resflow's own model)


def residual_words(m) -> str:
    """'residual α=1' / 'no residual' (mlp, conv, transformer share the key and its words)."""
    alpha = m.residual_scale if isinstance(m.residual_scale, str) else f"α={m.residual_scale:g}"
    return f"residual {alpha}" if m.residual else "no residual"


def norm_words(m) -> str:
    return f"{m.norm}-{m.norm_type}" if m.norm != "none" else "no norm"


def check_norm_groups(m) -> None:
    if m.norm_groups is not None:
        if m.norm_type != "groupnorm":
            raise ValueError(f"model.norm_groups: only for model.norm_type: groupnorm (it is {m.norm_type!r})")
        if m.norm != "none" and m.width % m.norm_groups:
            raise ValueError(f"model.norm_groups: {m.norm_groups} groups do not divide model.width {m.width}")


def check_batch_norm(m, cfg) -> None:
    """BatchNorm in train mode needs two examples per batch."""
    batch = (cfg.train.batch_size or cfg.data.batch_size) if cfg.train.steps else cfg.data.batch_size
    if m.norm != "none" and m.norm_type == "batchnorm" and batch < 2:
        key = "train.batch_size" if cfg.train.steps and cfg.train.batch_size else "data.batch_size"
        raise ValueError(
            f"{key}: model.norm_type: batchnorm normalises over the batch (train mode, as a real "
            f"step), which needs at least 2 examples; got {batch}"
        )
