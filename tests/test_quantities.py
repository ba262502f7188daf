"""The quantity registry (resflow/quantities): well-formed units, every consumer iterating over it,
and its generated docs current."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from resflow import quantities
from resflow.quantities.base import OPT_IN_PRIMITIVES, PARAM_PRIMITIVES, SITE_PRIMITIVES, TABLES

ROOT = Path(__file__).resolve().parents[1]
ALL = [q for table in (quantities.GRADS, quantities.PARAMS, quantities.HIST) for q in table.values()]


@pytest.mark.parametrize("q", ALL, ids=[f"{q.table}:{q.name}" for q in ALL])
def test_each_unit_is_well_formed(q):
    primitives = {"grads": SITE_PRIMITIVES, "params": PARAM_PRIMITIVES, "hist": OPT_IN_PRIMITIVES}[q.table]
    assert q.table in TABLES and q.needs and set(q.needs) <= set(primitives), q.needs
    assert q.scale in ("log", "linear") and q.doc and "\n" not in q.doc and q.label
    assert (q.tensor is not None) == (q.table == "hist")
    assert (q.value is None) == (len(q.needs) == 1 or q.tensor is not None)


def test_registry_is_torch_free():
    """results and report import it and must never import torch (pyproject's contract)."""
    code = "import sys, resflow.quantities; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_columns_come_from_the_registry():
    from resflow.results.tables import GRADS_APPENDED, GRADS_COLUMNS, PARAMS_COLUMNS, TRAIN_PARAMS_COLUMNS
    from resflow.results.tensorboard_events import MEASURES

    assert [c for c in GRADS_COLUMNS if c in quantities.GRADS] + GRADS_APPENDED == list(quantities.GRADS)
    assert [c for c in PARAMS_COLUMNS if c in quantities.PARAMS] + TRAIN_PARAMS_COLUMNS == list(quantities.PARAMS)
    assert set(MEASURES) == {n for n, q in quantities.GRADS.items() if q.tag}


def test_each_new_quantity_is_named_in_its_unit_and_the_registry_line_only():
    """Issue 26: a quantity added later touches its own file and one registry line under resflow/."""
    for name in ("grad_to_weight", "update_ratio", "grad_hist"):
        files = {str(p.relative_to(ROOT)) for p in (ROOT / "resflow").rglob("*.py") if re.search(rf"\b{name}\b", p.read_text())}
        assert files == {f"resflow/quantities/{name}.py", "resflow/quantities/__init__.py"}, files


def test_results_docs_are_current():
    spec = importlib.util.spec_from_file_location("quantities_ref", ROOT / "docs" / "hooks" / "quantities_ref.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    text = (ROOT / "docs" / "results.md").read_text()
    assert hook.committed(text) is not None, "docs/results.md lost its quantities-reference markers"
    assert hook.is_current(text), f"docs/results.md's quantity table is stale; run: {hook.HOW}"
    for q in ALL:
        assert f"| `{q.name}` |" in hook.render()


def test_the_report_draws_every_other_measured_quantity(tmp_path):
    from resflow.config.loading import load_config
    from resflow.experiment import run
    from resflow.report.figures.plots import drawn_quantities
    from resflow.report.html import write_report
    from resflow.results.files import write_run

    cfg = load_config(dict(name="q", seeds=2, data=dict(batch_size=4), model=dict(depth=4, width=8)))
    out = write_run(run(cfg), tmp_path / "r")
    drawn = [q.name for q in drawn_quantities(run(cfg).grads)]
    assert drawn == [n for n in quantities.GRADS if n != "input_grad_norm" and not quantities.GRADS[n].opt_in]
    page = write_report(out).read_text()
    assert "id='fig-quantities'" in page
