"""grad_hist (resflow/quantities/grad_hist.py): per-parameter gradient histograms, opt-in in watch,
against torch.histc on the same gradients; to hist.csv and to TensorBoard histograms."""

import pytest
import torch
from tinymodels import Tiny

import resflow
from resflow.results.files import read_run

NAME = "grad_hist"


def loop(tmp_path=None, steps=3, every=2, **kwargs):
    """A user's loop under watch; returns (watch, {step: {(layer, param): gradient copy}})."""
    torch.manual_seed(0)
    model = Tiny(width=6, depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randn(8, 2)
    grads = {}
    with resflow.watch(model, every=every, quantities=[NAME], **kwargs) as w:
        for step in range(steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            w.step()
            grads[step] = {(i, n): p.grad.clone() for i, b in enumerate(model.blocks) for n, p in b.named_parameters()}
            grads[step].update({(3, f"head.{n}"): p.grad.clone() for n, p in model.head.named_parameters()})
            opt.step()
    return w, grads


def test_bins_equal_torch_histc_on_the_same_gradients():
    w, grads = loop()
    h = w.result().hist
    assert list(h.columns) == ["variant", "seed", "step", "layer", "param", "bin_lo", "bin_hi", "count"]
    assert sorted(h["step"].unique()) == [0, 2]
    checked = 0
    for (step, layer, param), rows in h.groupby(["step", "layer", "param"]):
        g = grads[step][(layer, param)]  # (the head: layer 3, named "head.weight", "head.bias")
        lo, hi = g.min().item(), g.max().item()
        want = torch.histc(g.float(), bins=len(rows), min=lo, max=hi)
        assert rows["count"].tolist() == want.long().tolist()
        assert rows["bin_lo"].iloc[0] == pytest.approx(lo) and rows["bin_hi"].iloc[-1] == pytest.approx(hi)
        assert rows["count"].sum() == g.numel()
        checked += 1
    assert checked == 2 * 8  # two recorded steps x (3 blocks x 2 + head weight and bias)


def test_off_by_default():
    torch.manual_seed(0)
    model = Tiny()
    with resflow.watch(model) as w:
        model(torch.randn(2, 6)).sum().backward()
        w.step()
    assert w.result().hist is None


def test_hist_csv_and_tensorboard_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    w, grads = loop(out=tmp_path / "r", log_to=f"tensorboard:{tmp_path / 'tb'}")
    back = read_run(tmp_path / "r")
    assert back.hist is not None and back.hist.equals(w.result().hist)
    acc = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents.*")).parent), size_guidance={"histograms": 0})
    acc.Reload()
    tag = f"{NAME}/layer_001/lin.weight"
    assert tag in acc.Tags()["histograms"]
    events = {e.step: e.histogram_value for e in acc.Histograms(tag)}
    g = grads[2][(1, "lin.weight")]
    want = torch.histc(g.float(), bins=len(events[2].bucket), min=g.min().item(), max=g.max().item())
    assert [int(c) for c in events[2].bucket] == want.long().tolist() and sorted(events) == [0, 2]


def test_export_replays_the_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    from clirunner import Runner
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resflow.cli.app import app

    w, _ = loop(out=tmp_path / "r", log_to=f"tensorboard:{tmp_path / 'live'}")
    done = Runner().invoke(app, ["export", str(tmp_path / "r"), str(tmp_path / "tb"), "--to", "tensorboard"])
    assert done.exit_code == 0, done.output

    def histograms(root):
        acc = EventAccumulator(str(next(root.rglob("events.out.tfevents.*")).parent), size_guidance={"histograms": 0})
        acc.Reload()
        tags = [t for t in acc.Tags()["histograms"] if t.startswith(NAME)]
        return {t: [(e.step, list(e.histogram_value.bucket)) for e in acc.Histograms(t)] for t in tags}

    live, exported = histograms(tmp_path / "live"), histograms(tmp_path / "tb")
    assert live and live == exported
