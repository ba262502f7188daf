"""Configs: YAML files and `--set` overrides in (loading.py, safeyaml.py), a validated, frozen `Config`
out (schema.py), or one-line errors (messages.py); the memory a config needs, checked before anything
is built (memory.py); bounds shared with the CLI (limits.py)."""

__all__ = ["Config", "load_config", "validate"]


def __getattr__(name):  # lazy (PEP 562): the CLI imports limits.py at start-up without pydantic
    if name in __all__:
        from resflow.config import loading, schema

        return getattr(loading if name == "load_config" else schema, name)
    raise AttributeError(f"module 'resflow.config' has no attribute {name!r}")
