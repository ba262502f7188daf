"""Print the lowest versions pyproject.toml allows, one `name==floor` a line, for `pip install`.

The project's dependencies and the extras named on the command line (e.g. `parquet tensorboard`).
torch is pinned to TORCH instead: its floor's wheel is not on this machine (and is several GB).
"""

import re
import sys
import tomllib
from pathlib import Path

TORCH = "torch==2.13.0"

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[1:]:
    wanted += project["optional-dependencies"][extra]
for spec in wanted:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", spec.strip())
    if match is None:
        sys.exit(f"lowest.py: {spec!r} has no plain >= floor")
    name, extras, floor = match.groups()
    print(TORCH if name == "torch" else f"{name}{extras or ''}=={floor}")
