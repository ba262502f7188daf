"""Block families: one module per family, each the whole story of its config.

A family module holds the family's `model` section (its keys, defaults, one-line checks), its
default task and input shape, its memory estimate, its words in `run`'s title, the results'
config columns and `resflow theory`'s line, and whether the mean-field theory covers it. The
section is selected by `model.block` (`model.factory` selects the factory family); a key of
another family is refused naming this one.

Why here, in config: the layers contract keeps pydantic out of resflow.models and resflow.measure,
and `resflow theory`, `sweep` and `show` validate configs without importing torch. So a family's
torch half, its nn.Module, lives in resflow.models under the same name (models/build.py's
`BLOCKS`), and everything else lives here; the rest of resflow asks `cfg.model` (its class
attributes and methods) instead of comparing `block` to a name.

Adding a family: a module here with a `Family` subclass, one line in `FAMILIES`, and its
nn.Module with one line in resflow.models.build.BLOCKS (docs/extending.md).
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from resflow.config.families.base import Family
from resflow.config.families.conv import Conv
from resflow.config.families.factory import Factory
from resflow.config.families.highway import Highway
from resflow.config.families.mlp import Mlp
from resflow.config.families.transformer import Transformer
from resflow.config.messages import show

FAMILIES: dict[str, type[Family]] = {
    "mlp": Mlp,
    "transformer": Transformer,
    "conv": Conv,
    "highway": Highway,
    "factory": Factory,  # selected by model.factory, not by model.block
}
BLOCK_NAMES = tuple(name for name in FAMILIES if name != "factory")

for _family in FAMILIES.values():  # each family refuses the others' keys by name
    _family.foreign = frozenset(k for other in FAMILIES.values() for k in other.model_fields)


def family_name(data: Any) -> str | None:
    """The family a raw `model` section selects (None: `model.block` names none)."""
    if isinstance(data, Family):
        return data.name
    if not isinstance(data, dict):
        return "mlp"  # (reported by the section: not a mapping)
    if data.get("factory") is not None:
        return "factory"
    block = data.get("block", "mlp")
    return block if isinstance(block, str) and block in BLOCK_NAMES else None


def unknown_block(block: Any) -> str:
    """The one-line error for a `model.block` that names no family."""
    close = difflib.get_close_matches(block, BLOCK_NAMES, n=1) if isinstance(block, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    names = [repr(n) for n in BLOCK_NAMES]
    return f"model.block: must be {', '.join(names[:-1])} or {names[-1]}, got {show(block)}{hint}"


def as_written_before_families(data: dict[str, Any]) -> dict[str, Any]:
    """A results dir's config.yaml from before the block families held every key of every family,
    the unused ones null or false: drop those false ones (null ones count as unset anyway), so
    `show` and a rerun still read it. A foreign key with any other value is still refused."""
    model, name = data.get("model"), family_name(data.get("model"))
    if not isinstance(model, dict) or name not in FAMILIES:
        return data
    own = FAMILIES[name].model_fields
    model = {k: v for k, v in model.items() if k in own or v is not False}
    init = model.get("init")
    if isinstance(init, dict) and init.get("zero_out") is False and "zero_out" not in own["init"].annotation.model_fields:
        model["init"] = {k: v for k, v in init.items() if k != "zero_out"}
    return {**data, "model": model}


ModelSection = Annotated[
    Union[tuple(Annotated[cls, Tag(name)] for name, cls in FAMILIES.items())],  # type: ignore[misc]
    Discriminator(family_name),
]

__all__ = [
    "BLOCK_NAMES",
    "FAMILIES",
    "Family",
    "ModelSection",
    "as_written_before_families",
    "family_name",
    "unknown_block",
]
