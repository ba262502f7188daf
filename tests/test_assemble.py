"""The one assembly path (resflow.results.assemble) and the rule that no module reads another's
private names: tables from rows checked against hand computations, the recorder's public
parameter layout against the model's own parameters, and an AST scan of the package."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import resflow
from resflow.measure.recorder import Recorder
from resflow.models.stack import Site
from resflow.results.assemble import Rows, assemble
from resflow.results.tables import GRADS_COLUMNS, PARAMS_COLUMNS, SUMMARY_COLUMNS, TRAIN_COLUMNS

PACKAGE = Path(resflow.__file__).parent

CONSTANTS = dict(
    block="mlp",
    depth=3,
    width=4,
    activation="tanh",
    residual=True,
    residual_scale=1.0,
    norm=None,
    norm_type="layernorm",
    init_scheme="he",
    init_scale=1.0,
)


def hand_rows() -> tuple[Rows, dict]:
    """Two seeds of three sites each, written out by hand; and each seed's input_grad_norm."""
    norms = {0: [8.0, 4.0, 2.0], 1: [3.0, 3.0, 1.5]}
    grads = {
        k: [] for k in ("variant", "seed", "step", "layer", "sublayer", "input_grad_norm", "activation_rms", "param_grad_norm")
    }
    params = {k: [] for k in PARAMS_COLUMNS}
    for seed, values in norms.items():
        for layer, g in enumerate(values):
            for key, value in zip(grads, ("v", seed, 0, layer, "block", g, 1.0 + layer, 0.5)):
                grads[key].append(value)
            for key, value in zip(params, ("v", seed, 0, layer, "w", 0.25, 2.0)):
                params[key].append(value)
    train = {"variant": ["v"] * 2, "seed": [0, 0], "step": [0, 1], "loss": [1.0, 0.5]}
    return Rows(grads, params, train), norms


def test_assemble_builds_every_table_from_rows():
    rows, norms = hand_rows()
    seen = []

    def overlay(grads, summary):  # the theory step, as a caller passes it
        seen.append((len(grads), len(summary)))
        return grads.assign(predicted=1.0), summary.assign(chi1=2.0)

    result = assemble(rows, CONSTANTS, overlay=overlay, config={"name": "v"}, meta={"kind": "test"})

    assert seen == [(6, 2)]  # applied once, to the whole grads and the summary
    g, s = result.grads, result.summary
    assert list(g.columns) == [*GRADS_COLUMNS, "predicted"]
    for key, value in CONSTANTS.items():  # the constants on every grads and train row
        assert g[key].tolist() == [value] * 6
        assert result.train[key].tolist() == [value] * 2
    assert list(result.train.columns[:4]) == ["variant", "seed", "step", "loss"]
    assert set(result.train.columns) <= set(TRAIN_COLUMNS)
    assert list(s.columns) == [*SUMMARY_COLUMNS, "chi1"]
    for seed, values in norms.items():  # first / last, and the fitted per-layer gain, by hand
        row = s[s["seed"] == seed].iloc[0]
        assert row["grad_first"] == values[0] and row["grad_last"] == values[-1]
        assert row["grad_ratio"] == pytest.approx(values[0] / values[-1])
        slope = np.polyfit([0, 1, 2], np.log(values), 1)[0]
        assert row["gain_per_layer"] == pytest.approx(math.exp(-slope))
    assert result.params["grad_norm"].tolist() == [0.25] * 6 and list(result.params.columns) == PARAMS_COLUMNS
    assert result.config == {"name": "v"} and result.meta == {"kind": "test"}
    assert rows.grads.keys().isdisjoint(CONSTANTS)  # the caller's rows are left as they were


def test_assemble_without_rows_gives_the_schemas_empty_tables():
    nothing = assemble(Rows(), CONSTANTS, overlay=lambda g, s: (g.assign(p=1.0), s.assign(q=1.0)), module=True)
    assert list(nothing.grads.columns) == [*GRADS_COLUMNS[:5], "module", *GRADS_COLUMNS[5:], "p"]
    assert list(nothing.summary.columns) == [*SUMMARY_COLUMNS, "q"]
    assert list(nothing.params.columns) == PARAMS_COLUMNS
    assert nothing.train is None and len(nothing.grads) == len(nothing.summary) == len(nothing.params) == 0
    assert "module" not in assemble(Rows(), CONSTANTS).grads


def test_recorder_parameter_layout_matches_the_models_parameters():
    """Recorder.params holds each parameter once (a shared one too); param_rows maps every params.csv
    row to the tensor it measured: the value norms agree with torch's norms of those tensors."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    b.weight = a.weight  # shared: two sites, one parameter
    sites = [Site(0, "block", a, tuple(a.named_parameters())), Site(1, "block", b, tuple(b.named_parameters()))]
    rec = Recorder(sites)
    assert [id(p) for p in rec.params] == [id(a.weight), id(a.bias), id(b.bias)]
    x = torch.randn(3, 4, requires_grad=True)
    with rec:
        b(torch.tanh(a(x))).sum().backward()
        record = rec.collect()
    expected = [p.detach().norm().item() for p in (a.weight, a.bias, a.weight, b.bias)]  # the rows, site by site
    assert [rec.params[i].detach().norm().item() for i in rec.param_rows] == pytest.approx(expected)
    assert record.param_value == pytest.approx(expected, rel=1e-6)


def test_record_tables_match_retain_grad():
    """resflow.record's frames, through the assembly, against an independent autograd computation."""
    torch.manual_seed(1)
    blocks = torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh()) for _ in range(3)))
    x = torch.randn(4, 5)
    r = resflow.record(blocks, x, loss=lambda out: out.pow(2).sum(), blocks=["0", "1", "2"])

    inputs, h = [], x.clone().requires_grad_(True)
    for block in blocks:
        h.retain_grad()
        inputs.append(h)
        h = block(h)
    blocks.zero_grad()
    h.pow(2).sum().backward()
    expected = [t.grad.norm().item() for t in inputs]
    assert r.grads["input_grad_norm"].tolist() == pytest.approx(expected, rel=1e-5)
    assert r.grads["activation_rms"].tolist() == pytest.approx([t.detach().pow(2).mean().sqrt().item() for t in inputs], rel=1e-5)
    assert r.summary["grad_ratio"].item() == pytest.approx(expected[0] / expected[-1], rel=1e-5)
    assert r.summary["predicted_grad_ratio"].isna().all() and r.grads["predicted_input_grad_norm"].isna().all()
    weights = r.params[r.params["param"] == "0.weight"]
    assert weights["grad_norm"].tolist() == pytest.approx([blk[0].weight.grad.norm().item() for blk in blocks], rel=1e-5)
    assert r.grads["depth"].tolist() == [3] * 3 and r.meta["theory"].startswith("no prediction")


# ---------------------------------------------------------------------------------------------
# no module reads another module's private names


def _private_names(tree: ast.Module) -> set[str]:
    """The single-underscore names a module defines: functions, classes, module globals, and
    attributes it sets on `self`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


TORCH_OWN = {"_version"}  # a tensor's in-place version counter (torch's, not a resflow module's)


def private_reads(modules: dict[str, ast.Module]) -> list[str]:
    """`obj._name` (obj not self/cls/torch) or `from resflow.x import _name` where `_name` is one
    another resflow module defines and this one does not: a read of another module's private name."""
    defined = {path: _private_names(tree) for path, tree in modules.items()}
    everyone = set().union(*defined.values()) - TORCH_OWN
    found = []
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in everyone - defined[path]:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "torch")):
                    found.append(f"{path}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resflow"):
                found += [f"{path}:{node.lineno} import {a.name}" for a in node.names if a.name in everyone - defined[path]]
    return found


def test_no_module_reads_another_modules_private_names():
    modules = {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    assert private_reads(modules) == []


def test_the_private_name_scan_finds_a_read():
    """The scan itself can fail: a module reading the Recorder's `_params` is caught."""
    modules = {
        "measure/recorder.py": ast.parse("class Recorder:\n    def __init__(self):\n        self._params = []\n"),
        "train/loop.py": ast.parse("def f(recorder):\n    return recorder._params\n"),
        "results/files.py": ast.parse("from resflow._sys.files import _write_all\n"),
        "_sys/files.py": ast.parse("def _write_all(fd, data):\n    pass\n"),
    }
    assert private_reads(modules) == ["train/loop.py:2 ._params", "results/files.py:1 import _write_all"]
