"""`model.factory` — any model instead of resflow's own (a `package.module:callable` or a named Hugging
Face factory, resflow.models.factory builds it): only its own keys, measured at initialisation."""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from resflow.config.families.base import Family

FACTORY_KEYS = ("factory", "kwargs", "blocks")
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module:callable (hf:<name> for the named ones)
NAMED_FACTORIES = ("hf:gpt2", "hf:resnet")  # resflow.models.hf (checked against it by a test)


class Factory(Family):
    name = "factory"
    plural = "models built by a factory"
    classifies = False

    factory: str = Field(
        description="any model instead of resflow's own: `package.module:callable` (imported: that runs its "
        "code) or a named factory, `hf:gpt2` / `hf:resnet` (Hugging Face, random weights, never downloaded); "
        "then only `kwargs` and `blocks` apply, and data takes `shape` or `tokens`",
    )
    kwargs: Optional[dict[str, Any]] = Field(None, description="its keyword arguments")
    blocks: Optional[list[str]] = Field(
        None, description="glob patterns of the modules measured (at least one), unset means discovered"
    )

    @model_validator(mode="before")
    @classmethod
    def _factory_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            own = [k for k in data if k not in FACTORY_KEYS and data[k] is not None]
            if own:
                raise ValueError(
                    f"model.{own[0]}: not used with model.factory (the factory builds the model; "
                    f"its arguments go in model.kwargs)"
                )
        return data

    @field_validator("factory")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not FACTORY_PATTERN.match(value):
            raise ValueError(
                f"expected 'package.module:callable' or a named factory ({', '.join(NAMED_FACTORIES)}), got {value!r}"
            )
        return value

    @field_validator("blocks")
    @classmethod
    def _some_blocks(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:  # [] would measure nothing
            raise ValueError(
                "must name at least one glob pattern, e.g. ['transformer.h.*'], or be left unset to discover the blocks"
            )
        return value

    def memory(self, d) -> tuple[int, int, int, dict]:  # unknown until it is built
        return 0, 0, 0, {"params": "model.kwargs", "activations": "data.shape"}

    def title(self, data) -> str:
        args = ", ".join(f"{k}={v}" for k, v in (self.kwargs or {}).items())
        return f"{self.factory}({args})"

    def theory_words(self) -> str:
        return self.factory
