"""The import contract (pyproject.toml) and what the README and docs/index.md say of the layers agree."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)

ROOT = Path(__file__).resolve().parents[1]


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    return [name.removeprefix("resflow.") for name in layers]


def test_docs_index_lists_the_contracts_layers_top_to_bottom():
    text = (ROOT / "docs" / "index.md").read_text()
    listed = re.search(r"top to bottom: (.*?)\)\.", text, re.S).group(1)
    assert re.findall(r"`([\w.]+)`", listed) == contract_layers()


def test_readme_package_table_follows_the_contracts_order():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| folder | holds |") : text.index("More in [the docs' package map]")]
    order = contract_layers()
    seen = []  # per row, the highest layer it names
    for row in table.splitlines()[2:]:
        if not row.startswith("|"):
            continue
        names = [n.removesuffix(".py") for n in re.findall(r"`resflow/(\w+)", row.split("|")[1])]
        seen.append(min(order.index(n) for n in names))
    assert seen == sorted(seen) and len(seen) >= 10  # top to bottom, as the contract
