"""Blocks and the stack builder. `build_model(config.model, ...)` is the one entry point."""

from resflow.models.build import build_model
from resflow.models.stack import Site, Stack

__all__ = ["build_model", "Site", "Stack"]
