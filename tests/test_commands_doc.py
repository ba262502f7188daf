"""docs/commands.md is checked against the Typer app itself: every command has a row in the table at
the top, and that row names every option the command takes (so a new flag cannot go undocumented)."""

import re
from pathlib import Path

import typer.main

from resflow.cli.app import app

PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands.md"


def table_rows() -> dict[str, str]:
    """command name -> its row in the table (the first cell's `resflow NAME ...` usage)."""
    rows = {}
    for line in PAGE.read_text().splitlines():
        m = re.match(r"\| `resflow (\w+)", line)
        if m:
            rows[m.group(1)] = line.split(" | ")[0]
    return rows


def test_every_command_and_option_is_in_the_commands_page():
    group = typer.main.get_command(app)
    rows = table_rows()
    assert set(group.commands) <= set(rows), sorted(set(group.commands) - set(rows))
    missing = []
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            longest = max(param.opts, key=len)
            if not re.search(re.escape(longest) + r"(?![\w-])", rows[name]):
                missing.append(f"{name} {longest}")
    assert not missing, f"options missing from docs/commands.md's table: {missing}"


def test_the_export_row_names_every_tracker():
    from resflow.report.export import EXPORTERS

    row = table_rows()["export"]
    assert all(name in row for name in EXPORTERS), row
