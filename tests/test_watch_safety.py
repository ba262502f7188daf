"""`watch(out=)` is as safe as `run` (issue 25): the results-dir lock for the watch's lifetime, `force`
replacing a dir whole, no dir from a watch that recorded nothing, inputs detached by `record`, and
one-line errors at the call for a bad loss, a disabled autograd and a meta-device model."""

import numpy as np
import pytest
import torch
from tinymodels import Tiny
from torch import nn
from typer.testing import CliRunner

import resflow
from resflow._sys.locks import lock_path
from resflow.cli.app import app
from resflow.errors import ResflowError
from resflow.results.files import read_run, write_run

runner = CliRunner()


def train(model, w, steps, loss=True):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(2, (8,), generator=gen)
        value = nn.functional.cross_entropy(model(x), y)
        value.backward()
        w.step(value if loss else None)
        opt.step()
        opt.zero_grad()


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


# ---------------------------------------------------------------------------------------------
# The lock


def test_a_watch_holds_the_results_dir_lock_for_its_lifetime(tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(0)
    model = Tiny()
    with resflow.watch(model, out=out) as w:
        assert lock_path(out).is_file()
        train(model, w, 2)
        with pytest.raises(ResflowError) as err:  # a second watch of the same dir, even with force
            with resflow.watch(Tiny(), out=out, force=True):
                pass
        assert "being written by another resflow process" in one_line(err)
        cli = runner.invoke(app, ["demo", "tanh50", "--seeds", "1", "--out", str(out), "--force"])
        assert cli.exit_code == 1 and "being written by another resflow process" in cli.stderr, cli.output
        train(model, w, 2)
    assert not lock_path(out).exists()
    assert sorted(set(read_run(out).grads["step"])) == [0, 1, 2, 3]  # the watch's own rows, nothing else's


# ---------------------------------------------------------------------------------------------
# force replaces the dir whole


def test_force_over_a_parquet_results_dir_keeps_nothing_of_the_old_run(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "run"
    torch.manual_seed(1)
    old = resflow.record(Tiny(depth=5), torch.randn(4, 6), name="old")
    write_run(old, out, fmt="parquet")
    assert (out / "grads.parquet").is_file()
    torch.manual_seed(2)
    model = Tiny()
    with resflow.watch(model, out=out, force=True, name="new") as w:
        train(model, w, 3)
    assert not list(out.glob("*.parquet"))
    back = read_run(out)
    assert set(back.grads["variant"]) == {"new"} and len(back.grads) == 3 * 3
    np.testing.assert_array_equal(back.grads["input_grad_norm"], w.grads["input_grad_norm"])
    shown = runner.invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "old" not in shown.stdout.split(), shown.output


def test_force_over_a_dir_with_train_csv_and_no_loss_given(tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(3)
    model = Tiny()
    with resflow.watch(model, out=out) as w:
        train(model, w, 3)
    assert (out / "train.csv").is_file()
    with resflow.watch(model, out=out, force=True, every=2) as w:
        train(model, w, 3, loss=False)
    back = read_run(out)
    assert sorted(set(back.grads["step"])) == [0, 2]
    assert back.train["loss"].isna().all() and (back.train["grad_norm_total"] > 0).all()
    assert runner.invoke(app, ["show", str(out)]).exit_code == 0


def test_a_watch_that_records_nothing_writes_nothing(tmp_path):
    """No recorded step: no results dir (and with force, the earlier one is left as it was)."""
    out = tmp_path / "new" / "run"
    with resflow.watch(Tiny(), out=out):
        pass
    assert not out.exists() and not lock_path(out).exists() and not (tmp_path / "new").exists()
    torch.manual_seed(4)
    model = Tiny()
    kept = tmp_path / "kept"
    with resflow.watch(model, out=kept) as w:
        train(model, w, 2)
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    with pytest.raises(KeyError):
        with resflow.watch(model, out=kept, force=True):
            raise KeyError("the user's loop failed before its first step")
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    assert runner.invoke(app, ["show", str(kept)]).exit_code == 0


# ---------------------------------------------------------------------------------------------
# record leaves the caller's tensors alone


def test_record_does_not_backpropagate_into_the_callers_graph():
    torch.manual_seed(5)
    encoder, model = nn.Linear(6, 6), Tiny()
    raw = torch.randn(4, 6)
    x = encoder(raw)  # part of the caller's graph
    got = resflow.record(model, x)
    assert encoder.weight.grad is None and encoder.bias.grad is None
    want = resflow.record(model, x.detach())
    assert got.grads["input_grad_norm"].tolist() == want.grads["input_grad_norm"].tolist()
    leaf = torch.randn(4, 6, requires_grad=True)
    resflow.record(model, leaf)
    assert leaf.grad is None
    x.sum().backward()  # the caller's graph is intact: its own backward still runs
    assert encoder.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# One-line errors at the call


@pytest.mark.parametrize(
    "loss, message",
    [
        ("abc", "the loss must be a number or a one-element tensor, got str 'abc'"),
        (torch.ones(3, requires_grad=True), "the loss must be a scalar (one number), got a tensor of shape (3,)"),
        (True, "the loss must be a number or a one-element tensor, got bool"),
    ],
    ids=["string", "non-scalar", "bool"],
)
def test_a_bad_loss_given_to_step_is_a_one_line_error_at_the_call(tmp_path, loss, message):
    out = tmp_path / "run"
    torch.manual_seed(6)
    model = Tiny()
    with resflow.watch(model, out=out) as w:
        train(model, w, 1)
        model(torch.randn(2, 6)).sum().backward()
        with pytest.raises(ResflowError) as err:
            w.step(loss)
        assert message in one_line(err)
        assert w.steps == 1  # the step was not taken: the user can call it again
        w.step()
    back = read_run(out)  # and nothing broke at the next flush
    assert list(back.train["step"]) == [0, 1]


@pytest.mark.parametrize("mode, cause", [(torch.no_grad, "torch.no_grad()"), (torch.inference_mode, "torch.inference_mode()")])
def test_record_with_gradients_disabled_names_the_cause(mode, cause):
    model = Tiny()
    with mode(), pytest.raises(ResflowError) as err:
        resflow.record(model, torch.randn(4, 6))
    text = one_line(err)
    assert cause in text and "loss" not in text
    assert all(p.grad is None for p in model.parameters())


def test_a_meta_device_model_is_a_one_line_error(tmp_path):
    with torch.device("meta"):
        model = Tiny()
    with pytest.raises(ResflowError) as err:
        resflow.record(model, torch.randn(4, 6, device="meta"))
    assert "on the meta device" in one_line(err) and "'blocks.0.lin.weight'" in str(err.value)
    with pytest.raises(ResflowError) as err:
        resflow.watch(model, out=tmp_path / "run")
    assert "on the meta device" in one_line(err)
    assert not (tmp_path / "run").exists()


def test_a_tensorboard_dir_that_cannot_be_made_releases_the_lock(tmp_path):
    pytest.importorskip("tensorboard")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "run"
    with pytest.raises(ResflowError, match="cannot create the TensorBoard logdir"):
        with resflow.watch(Tiny(), out=out, tensorboard=tmp_path / "file" / "tb"):
            pass
    assert not lock_path(out).exists()
    with resflow.watch(Tiny(), out=out):  # and the dir can be written now
        pass
