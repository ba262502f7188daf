"""Config values as tables and figures show them: numbers, words and booleans side by side.

A swept or compared key can hold a number, a word or both: `residual_scale` is 1.0 or `deepnorm`,
`norm` is `pre` or `post`, `final_norm` is true, false or unset. In memory a column holds the config's
values (1.0 and "deepnorm"); read back from a CSV the same column holds text ("1.0", "deepnorm"). These
helpers read both the same way, so a figure, a table and an export sort and label a value alike:
numbers in numeric order first, then booleans (false, true), then words in alphabetical order, unset last.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

BOOL_WORDS = {"true": True, "false": False}


def unset(value: Any) -> bool:
    """None or NaN (an unset optional key; an empty CSV cell)."""
    if value is None:
        return True
    try:
        return isinstance(value, (float, np.floating)) and math.isnan(value)
    except TypeError:
        return False


def as_bool(value: Any) -> bool | None:
    """True/False for a boolean or its CSV text ('True', 'false'), else None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return BOOL_WORDS.get(value.strip().lower())
    return None


def as_number(value: Any) -> float | None:
    """The value as a float when it is a number or a number's text ('1.0' read back from a CSV);
    None for booleans, words and unset values."""
    if isinstance(value, (bool, np.bool_)) or unset(value):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def sort_key(value: Any) -> tuple:
    """Numbers (numerically), then booleans (false, true), then words (alphabetically), unset last."""
    number = as_number(value)
    if number is not None:
        return (0, number, "")
    flag = as_bool(value)
    if flag is not None:
        return (1, float(flag), "")
    if unset(value):
        return (3, 0.0, "")
    return (2, 0.0, str(value))


def ordered(values: Iterable[Any]) -> list:
    """The distinct values (a number and its text counted once), in `sort_key` order."""
    seen: dict[tuple, Any] = {}
    for value in values:
        seen.setdefault(sort_key(value), value)
    return [seen[k] for k in sorted(seen)]


def all_numbers(values: Iterable[Any]) -> bool:
    """Every value a (finite or infinite) number: such a key can be an axis of its own."""
    return all(as_number(v) is not None for v in values)


def show(value: Any) -> str:
    """A value in a label or cell: whole numbers as they are, 1 for 1.0 (other numbers: 4 significant digits), true/false, words as they are,
    'null' for unset (as `--over KEY=null` and the sweep's point names write it)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))  # a depth of 100000 stays 100000
    number = as_number(value)
    if number is not None:
        return f"{number:.4g}"
    flag = as_bool(value)
    if flag is not None:
        return "true" if flag else "false"
    if unset(value):
        return "null"
    return str(value)
