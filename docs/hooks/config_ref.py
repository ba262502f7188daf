"""mkdocs hook: the config reference, rendered from resflow's pydantic schema at build time.

The field descriptions live once, in `Field(description=...)` in resflow.config; this hook turns
them into one table per section (key, type, default, description) wherever a page holds the marker
below, so the reference cannot drift from what the loader accepts.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # document this checkout's resflow, not another installed copy
    sys.path.insert(0, str(ROOT))

MARKER = "<!-- config-reference -->"
SCALARS = {int: "integer", float: "number", bool: "true/false", str: "text"}


def _is_section(annotation) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections(model=None, prefix: str = ""):
    """(dotted prefix, model class) for the top level and every nested section, depth first."""
    if model is None:
        from resflow.config import Config

        model = Config
    yield prefix, model
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            yield from sections(field.annotation, f"{prefix}{name}.")


def _type_text(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is typing.Union:
        parts = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if _is_section(annotation):
        return "section"
    return SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for item in field.metadata:
        for attr, sign in signs.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:,}" if isinstance(value, int) and value >= 10**4 else f"{sign} {value}")
        if getattr(item, "pattern", None):
            out.append(f"matching `{item.pattern}`")
    return ", ".join(out)


def _default_text(field) -> str:
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined:
        return "**required**"
    if value is None:
        return "unset"
    if _is_section(type(value)):
        return "(section)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """One table cell: one line, a literal | escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """Markdown: one table per config section."""
    out = []
    for prefix, model in sections():
        title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
        out += [f"### {title}", "", "| key | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            kind = _type_text(field.annotation)
            bounds = _bounds(field)
            if bounds:
                kind = f"{kind}, {bounds}"
            description = field.description or ""
            out.append(f"| `{prefix}{name}` | {kind} | {_default_text(field)} | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
