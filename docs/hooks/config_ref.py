"""The config reference, rendered from resflow's pydantic schema: committed, and checked current.

The field descriptions live once, in `Field(description=...)` in resflow.config; `render()` turns
them into one table per section (key, type, default, description). docs/config.md holds that text
between the two markers below, so a reader of the repository sees it too; `python
docs/hooks/config_ref.py` rewrites it, and both this mkdocs hook (at build time) and
tests/test_config_docs.py fail while it is stale, so it cannot drift from what the loader accepts.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # document this checkout's resflow, not another installed copy
    sys.path.insert(0, str(ROOT))

MARKER = "<!-- config-reference -->"
END = "<!-- /config-reference -->"
PAGE = ROOT / "docs" / "config.md"
HOW = "python docs/hooks/config_ref.py"
SCALARS = {int: "integer", float: "number", bool: "true/false", str: "text"}


def _is_section(annotation) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def tagged(annotation) -> dict:
    """{tag: section class} of a tagged union of sections (`model`: one per block family), else {}."""
    out = {}
    if typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is typing.Annotated:
                cls, *meta = typing.get_args(arg)
                tag = next((m.tag for m in meta if hasattr(m, "tag")), None)
                if tag is not None and _is_section(cls):
                    out[tag] = cls
    return out


def sections(model=None, prefix: str = "", title: str = "", seen=None, choice: str = "", users=None):
    """(dotted prefix, model class, title) for the top level and every nested section, depth first;
    a section chosen by a key (the block families of `model`) once per choice, a nested section
    shared by several of them (`model.init`) once, and titled with the choice when it is its own."""
    seen = set() if seen is None else seen
    if model is None:
        from resflow.config import Config

        model = Config
    if model in seen:
        return
    seen.add(model)
    yield prefix, model, title or (f"`{prefix.rstrip('.')}`" if prefix else "Top level")
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            own = choice and (users or {}).get(field.annotation) == 1  # (model.init of transformers)
            sub = f"`{prefix}{name}`" + (f" with {choice}" if own else "")
            yield from sections(field.annotation, f"{prefix}{name}.", sub, seen)
        families = tagged(field.annotation)
        used: dict = {}  # nested section class -> how many of the choices have it
        for cls in families.values():
            for f in cls.model_fields.values():
                if _is_section(f.annotation):
                    used[f.annotation] = used.get(f.annotation, 0) + 1
        for tag, cls in families.items():
            which = "`model.factory` set" if tag == "factory" else f"`{prefix}{name}.block: {tag}`"
            yield from sections(cls, f"{prefix}{name}.", f"`{prefix}{name}` with {which}", seen, which, used)


def _type_text(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is typing.Union:
        parts = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if _is_section(annotation) or tagged(annotation):
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
    for prefix, model, title in sections():
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


def block() -> str:
    """What docs/config.md holds between the markers."""
    return f"{MARKER}\n<!-- generated by {HOW} from resflow.config: do not edit by hand -->\n\n{render()}\n{END}"


def committed(text: str) -> str | None:
    """The marked block of a page's text, or None."""
    if MARKER not in text or END not in text:
        return None
    start = text.index(MARKER)
    return text[start : text.index(END, start) + len(END)]


def is_current(text: str) -> bool:
    return committed(text) == block()


def write(page: Path = PAGE) -> bool:
    """Rewrite the page's marked block (a bare marker becomes one); True when it changed."""
    text = page.read_text(encoding="utf-8")
    old = committed(text) or MARKER
    new = text.replace(old, block(), 1)
    if new != text:
        page.write_text(new, encoding="utf-8")
    return new != text


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if committed(markdown) is not None and not is_current(markdown):
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_path}: the config reference is stale; run: {HOW}")
    if MARKER in markdown and END not in markdown:  # a bare marker: rendered at build time
        return markdown.replace(MARKER, render())
    return markdown


if __name__ == "__main__":
    print(f"{'rewrote' if write() else 'unchanged:'} {PAGE.relative_to(ROOT)}")
