"""The config reference is generated from the schema: every key must carry a description, and the
docs hook must render a row for every key (tables built from Config.model_fields, checked here
against a separate walk of the JSON schema pydantic derives)."""

import importlib.util
from pathlib import Path
from typing import Annotated, get_args, get_origin

from pydantic import BaseModel

from resflow.config import Config
from resflow.config.families import FAMILIES

HOOK = Path(__file__).resolve().parents[1] / "docs" / "hooks" / "config_ref.py"


def _fields(model=Config, prefix=""):
    """(dotted key, field) of every section, and of every block family's `model` section."""
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")
        for arg in get_args(field.annotation):  # a tagged union of sections: model's block families
            cls = get_args(arg)[0] if get_origin(arg) is Annotated else None
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                yield from _fields(cls, f"{prefix}{name}.")


def _schema_keys():
    """Every dotted key, from pydantic's JSON schema (a different path than model_fields)."""
    schema = Config.model_json_schema()
    defs = schema.get("$defs", {})

    def walk(node, prefix):
        for name, prop in node.get("properties", {}).items():
            yield f"{prefix}{name}"
            refs = [prop["$ref"]] if "$ref" in prop else []
            refs += [a["$ref"] for a in prop.get("allOf", []) + prop.get("oneOf", []) if "$ref" in a]
            for ref in refs:  # (oneOf: one section per block family)
                yield from walk(defs[ref.rsplit("/", 1)[-1]], f"{prefix}{name}.")

    return set(walk(schema, ""))


def _hook():
    spec = importlib.util.spec_from_file_location("config_ref", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_has_a_description():
    missing = [key for key, field in _fields() if not (field.description or "").strip()]
    assert not missing, f"config keys without Field(description=...): {missing}"


def _rows(text: str) -> dict[str, str]:
    """key -> its rows (one per block family that has the key), joined by newlines."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            key = line.split("|")[1].strip().strip("`")
            rows[key] = rows.get(key, "") + line + "\n"
    return rows


def test_reference_has_one_row_per_key_with_its_description():
    rows = _rows(_hook().render())
    keys = _schema_keys()
    assert len(keys) > 40  # the walk found the nested sections
    assert set(rows) == keys
    for key, field in _fields():
        assert " ".join(field.description.split()) in rows[key].replace("\\|", "|")


def test_reference_shows_defaults_and_bounds():
    rows = _rows(_hook().render())
    assert "**required**" in rows["model.depth"] and "≥ 1" in rows["model.depth"]
    assert rows["model.depth"].count("\n") == len(FAMILIES) - 1  # one row per block family (the factory has none)
    assert "`32`" in rows["data.batch_size"]
    assert "`false`" in rows["model.residual"] and "unset" in rows["model.final_norm"]
    assert "`sum` \\| `mean` \\| `mse` \\| `random`" in rows["loss"]


def test_hook_replaces_only_its_marker():
    hook = _hook()
    assert hook.on_page_markdown("no marker here", None, None, None) == "no marker here"
    out = hook.on_page_markdown(f"before\n{hook.MARKER}\nafter", None, None, None)
    assert out.startswith("before\n### Top level") and out.endswith("after") and hook.MARKER not in out


def test_committed_reference_is_current():
    """docs/config.md holds the rendered reference as text (readable in the repository, not only on
    the built site), and it equals what the schema renders now."""
    hook = _hook()
    text = hook.PAGE.read_text(encoding="utf-8")
    assert hook.committed(text) is not None, "docs/config.md lost its config-reference markers"
    assert hook.is_current(text), f"docs/config.md's config reference is stale; run: {hook.HOW}"
    assert "| `model.depth` |" in text


def test_a_stale_reference_is_caught(tmp_path):
    hook = _hook()
    page = tmp_path / "config.md"
    page.write_text(hook.PAGE.read_text(encoding="utf-8").replace("| `model.depth` |", "| `model.dept` |"))
    assert not hook.is_current(page.read_text())
    from types import SimpleNamespace

    import pytest
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="stale"):  # the docs build fails on it
        hook.on_page_markdown(page.read_text(), SimpleNamespace(file=SimpleNamespace(src_path="config.md")), None, None)
    assert hook.write(page) and hook.is_current(page.read_text())
