"""The consoles resflow prints with: data is printed as text, never as markup or control codes.

Variant names, layer and module names, paths and error messages come from configs, CSVs and the
user's models, so they may hold `[/bold]`, `[link=…]` or an escape sequence (a window title, a
clear screen). `PlainConsole` turns Rich markup off and shows every control character as a visible
escape (`\\x1b`), in `render_str`: the one place every printed string and every table cell, title
and caption passes through. Rich's own styling (colours, the progress bar) is unaffected.
"""

from __future__ import annotations

import re

from rich.console import Console

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates
# (text that reads differently from what it is)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_LINE = 2000  # an error line longer than this is cut in the middle (a 20,000-character --set value)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\u202e`); tab and newline kept."""
    return CONTROL.sub(_escape, text)


def capped(text: str, limit: int = MAX_LINE) -> str:
    """`text` cut in the middle to at most about `limit` characters, saying how much was left out:
    the start (what failed) and the end (what is allowed) stay."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} … [{len(text) - head - tail:,} characters left out] … {text[-tail:]}"


class PlainConsole(Console):
    """A Rich Console whose strings are text: markup off unless asked for, control characters escaped."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs):
        return super().render_str(printable(text), **kwargs)
