"""PyYAML's safe loader, stricter: what every config file and `--set` value is read with."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (never constructs Python objects), stricter: 1e-3 is a float (YAML 1.1
    wants 1.0e-3; users write 1e-3), a key given twice is an error, and a bad value (`!!int abc`,
    `2001-02-30`) is a YAML error at its line and column instead of a stray ValueError."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice (first at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, OverflowError) as err:
            problem = (
                f"cannot read the value {node.value!r} as {node.tag.rsplit(':', 1)[-1]} ({err})"
                if isinstance(node, yaml.ScalarNode)
                else f"cannot read this value ({err})"
            )
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str):
    """yaml.safe_load, with 1e-3 read as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
