"""`resflow.watch(..., tensorboard=LOGDIR)`: each recorded step's per-layer scalars and loss, read
back with TensorBoard's EventAccumulator, equal w.grads' rows and the losses (as float32); the
steps not recorded hold nothing; the tags are the exporter's."""

import math
import sys

import numpy as np
import pytest
import torch
from tinymodels import Tiny
from torch import nn

import resflow
from resflow.errors import ResflowError
from resflow.results.tensorboard_events import MEASURES, layer_tag

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def events(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def train(tmp_path, steps=5, every=2, out=None):
    torch.manual_seed(3)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    logdir = tmp_path / "tb"
    with resflow.watch(model, every=every, tensorboard=logdir, out=out) as w:
        for _ in range(steps):
            x, y = torch.randn(8, 6), torch.randint(2, (8,))
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            w.step(loss)
            losses.append(loss.item())
            opt.step()
            opt.zero_grad()
    return w, losses, logdir


def test_live_scalars_equal_the_recorded_rows_and_losses(tmp_path):
    w, losses, logdir = train(tmp_path)
    assert w.recorded == [0, 2, 4]
    acc = events(logdir)
    tags = set(acc.Tags()["scalars"])
    g = w.grads
    checked = 0
    measured = [c for c in MEASURES if c in g]  # (opt-in quantities, not asked for here, are not)
    for _, row in g.iterrows():
        for column in measured:
            tag = f"{column}/{layer_tag(row)}"
            got = {e.step: e.value for e in acc.Scalars(tag)} if tag in tags else {}
            if math.isnan(row[column]):  # the first block's input gradient: none exists, nothing logged
                assert int(row["step"]) not in got, tag
                continue
            assert got[int(row["step"])] == np.float32(row[column]), (tag, row["step"])
            checked += 1
    assert checked >= 3 * (3 * len(measured) - 1)
    # the loss and the total gradient norm at every step, recorded or not (issue 24)
    assert {e.step: e.value for e in acc.Scalars("loss")} == {s: np.float32(losses[s]) for s in range(5)}
    norms = dict(zip(w.train["step"], w.train["grad_norm_total"]))
    assert {e.step: e.value for e in acc.Scalars("grad_norm_total")} == {s: np.float32(norms[s]) for s in range(5)}
    per_step = {t for t in tags if not t.startswith(("profile/", "summary/"))}
    for tag in per_step - {"loss", "grad_norm_total"}:  # the per-layer scalars: nothing at the steps not recorded
        assert {e.step for e in acc.Scalars(tag)} <= {0, 2, 4}, tag
    assert len(per_step) == 3 * len(measured) - 1 + 2  # every block's three measures (one NaN), loss, grad norm
    # the tags the docs promise, exactly: no '/block' part for a watched block
    assert {f"input_grad_norm/layer_{i:03d}" for i in (1, 2)} | {"activation_rms/layer_000"} <= tags


def test_live_tags_are_the_exporters(tmp_path):
    from resflow.report.export.tensorboard import export
    from resflow.results.files import read_run

    w, _, logdir = train(tmp_path, steps=3, every=1, out=tmp_path / "res")
    exported = tmp_path / "exported"
    export(read_run(tmp_path / "res"), exported)
    live = events(logdir)
    run = events(exported / w.name / "seed_0")
    per_layer = {t for t in run.Tags()["scalars"] if t.split("/")[0] in MEASURES}
    assert per_layer == {t for t in live.Tags()["scalars"] if t.split("/")[0] in MEASURES}
    assert {"loss", "profile/log10_input_grad_norm", "summary/gain_per_layer"} <= set(live.Tags()["scalars"])
    assert "input_grad_norm/layer_002" in per_layer
    for tag in per_layer:
        assert [(e.step, e.value) for e in live.Scalars(tag)] == [(e.step, e.value) for e in run.Scalars(tag)]


def test_without_tensorboard_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ResflowError, match="resflow\\[tensorboard\\]") as err:
        resflow.watch(Tiny(), tensorboard=tmp_path / "tb")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "tb").exists()
