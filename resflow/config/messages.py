"""Validation errors as one line each: the dotted key, the bad value, what is allowed, a hint."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

NAME_RULE = "letters, digits and . _ + = -, starting with a letter or digit"


def format_errors(err: ValidationError, source: str, overridden: set[str], root: type[BaseModel]) -> str:
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo explains a "missing"
    groups: dict[tuple, list] = {}  # a value that fits none of a field's types errs once per type: one message
    for e in errors:
        groups.setdefault(tuple(_field_loc(e["loc"], root)), []).append(e)
    parts = [
        _format_one(dict(g[0], loc=loc), overridden, root) if len(g) == 1 else _format_union(list(loc), g)
        for loc, g in groups.items()
    ]
    first = parts[0]
    origin = "--set " if _overridden(first.split(":")[0], overridden) else f"{source}: "
    shown = "; ".join(parts[1:4]) + ("; …" if len(parts) > 4 else "")
    more = f" (and {len(parts) - 1} more: {shown})" if len(parts) > 1 else ""
    return " ".join((origin + first + more).splitlines())  # one line, whatever a key contains


def _overridden(key: str, overridden: set[str]) -> bool:
    """The error's key came from an override: it is one, or a section on its path (`--set modle.depth=3`
    fails at `modle`), or a key inside one (`--set model={...}`)."""
    return any(key == o or o.startswith(key + ".") or key.startswith(o + ".") for o in overridden)


def _sections(annotation) -> dict[str, type[BaseModel]]:
    """A field's section types by tag: {"": the section} for a section, {tag: section} for a tagged
    union of sections (`model`: one per block family), {} for a plain field."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"": annotation}
    out = {}
    for arg in typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else ():
        if typing.get_origin(arg) is typing.Annotated:
            cls, *meta = typing.get_args(arg)
            tag = next((m.tag for m in meta if hasattr(m, "tag")), None)
            if tag is not None and isinstance(cls, type) and issubclass(cls, BaseModel):
                out[tag] = cls
    return out


def _field_loc(loc, root: type[BaseModel]) -> list[str]:
    """An error's location as the config's keys: without the tags pydantic adds for each type a
    field allows (model.residual_scale.float, model.residual_scale.literal['deepnorm']) or for the
    section a tagged union picked (model.mlp.depth: model.depth)."""
    out, model, tagged = [], root, {}
    for part in loc:
        if tagged:  # the tag of the section a union picked: not a key
            model, tagged = tagged.get(part), {}
            continue
        if model is None:  # below a plain field: a union member's tag, or an item of a list
            if isinstance(part, int):
                out.append(str(part))
            continue
        out.append(str(part))
        field = model.model_fields.get(part) if isinstance(part, str) else None
        sections = _sections(getattr(field, "annotation", None))
        model = sections.get("")
        tagged = sections if model is None else {}
        if field is None:  # an unknown key: nothing below it to strip
            model, tagged = None, {}
    return out


def _format_union(loc: list[str], group: list[dict[str, Any]]) -> str:
    """One message for a value that fits none of a field's types: what each would take."""
    wanted = []
    for e in group:
        kind = e["type"]
        if kind == "literal_error":
            wanted.append(str((e.get("ctx") or {}).get("expected", "")))
        elif kind == "finite_number" or kind.startswith("float"):
            wanted.append("a finite number")
        elif kind.startswith("int"):
            wanted.append("an integer")
        else:
            wanted.append(str(e["msg"]).replace("Input should be ", ""))
    return f"{'.'.join(loc)}: must be {' or '.join(dict.fromkeys(wanted))}, got {show(group[0].get('input'))}"


def _format_one(e: dict[str, Any], overridden: set[str], root: type[BaseModel]) -> str:
    loc = [str(p) for p in e["loc"]]
    key = ".".join(loc)
    kind = e["type"]
    value = e.get("input")
    if kind == "extra_forbidden" and loc == ["sweep"]:  # a sweep's config.yaml given to run/compare/theory
        return (
            "sweep: this config has a sweep: section, so it describes a sweep: run it with `resflow sweep`, "
            "or delete the section to use its base config"
        )
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1], root)
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        did_you_mean = f"; did you mean {'.'.join(loc[:-1] + [hint[0]])!r}?" if hint else ""
        return f"{key}: unknown key{did_you_mean} (allowed here: {', '.join(allowed)})"
    if kind == "value_error":
        msg = str(e["msg"]).removeprefix("Value error, ")
        return msg if _fields_at(loc, root) else f"{key}: {msg}"  # section-level checks name their keys
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "finite_number" or (isinstance(value, float) and not math.isfinite(value)):
        return f"{key}: must be a finite number, got {value!r}"
    if kind == "string_pattern_mismatch" and loc == ["name"]:
        return f"name: must be {NAME_RULE}, got {show(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{key}: must be a section (a mapping of keys to values), got {show(value)}"
    if kind == "invalid_key":
        return f"{key}: keys must be text, got {show(value)}"
    msg = e["msg"].replace("Input should be", "must be")
    return f"{key}: {msg}, got {show(value)}{_hint(kind, value, e.get('ctx') or {})}"


def _hint(kind: str, value: Any, ctx: dict[str, Any]) -> str:
    """A short suggestion after the message: the closest allowed name, or the unquoted value."""
    if kind == "literal_error" and isinstance(value, str):
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(value, allowed, n=1)
        return f"; did you mean {close[0]!r}?" if close else ""
    if kind == "bool_type" and isinstance(value, str):
        return " (write true or false, without quotes)"
    if kind in ("int_type", "float_type") and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (write the number without quotes)"
    return ""


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 40, 40, 4, 4, 2


def show(value: Any) -> str:
    """A short repr, cheap even for a huge value."""
    return _short.repr(value)


def _fields_at(loc: list[str], root: type[BaseModel]) -> list[str]:
    """The keys of the section at `loc` ([] below a plain field); for a union of sections, the keys
    of all of them (each refuses the others' keys itself, naming its family)."""
    models: list[type[BaseModel]] = [root]
    for part in loc:
        found = [s for m in models for s in _sections(getattr(m.model_fields.get(part), "annotation", None)).values()]
        if not found:
            return []
        models = found
    return list(dict.fromkeys(k for m in models for k in m.model_fields))
