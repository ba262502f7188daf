"""`watch` over a long run (issue 24, item 2): flushes append rows whose bytes are those of a whole
rewrite, meta.json vouches for the dir after every flush, the tables are assembled once per recorded
step, `in_memory=False` keeps only the files, and every step's loss and total gradient norm (checked
against a float64 norm of the gradients taken in the loop) reach train.csv."""

import errno
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import resflow
import resflow.results.files as files
from resflow.anymodel import _TrainLog, step_ranges
from resflow.errors import ResflowError
from resflow.results.files import read_run, write_files
from resflow.results.stats import summarize
from resflow.results.tables import CONFIG_COLUMNS


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class Tiny(nn.Module):
    def __init__(self, width=6, depth=4):
        super().__init__()
        self.stem = nn.Linear(width, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def loop(model, w, steps, seed=0, after=None):
    """A training loop; returns (losses, float64 total gradient norms) per step, taken independently."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    losses, norms = [], []
    for s in range(steps):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(3, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        norms.append(torch.cat([p.grad.double().flatten() for p in model.parameters()]).norm().item())
        w.step(loss)
        if after is not None:
            after(s)
        opt.step()
        opt.zero_grad()
    return losses, norms


TABLES = ("grads", "params", "summary", "train")


def test_appended_files_hold_the_bytes_of_a_whole_rewrite_after_every_flush(tmp_path):
    out, whole = tmp_path / "run", tmp_path / "whole"
    whole.mkdir()
    torch.manual_seed(0)
    model = Tiny()
    checked = []

    def check(step):
        back = read_run(out)  # meta.json's rows and sha256 hold after every flush
        result = w.result()
        write_files(result, whole)  # today's whole-table writer, side by side
        for t in TABLES:
            assert (out / f"{t}.csv").read_bytes() == (whole / f"{t}.csv").read_bytes(), (step, t)
            assert len(getattr(back, t)) == len(getattr(result, t)), (step, t)
        checked.append(step)

    with resflow.watch(model, every=2, out=out) as w:
        loop(model, w, 7, after=lambda s: check(s) if s % 2 == 0 else None)
    check("exit")
    assert checked == [0, 2, 4, 6, "exit"]
    assert sorted(set(read_run(out).grads["step"])) == [0, 2, 4, 6]


def test_the_summary_per_step_equals_one_over_the_whole_table():
    torch.manual_seed(1)
    model = Tiny()
    with resflow.watch(model, every=1) as w:
        loop(model, w, 5)
    mine = w.summary
    cols = [c for c in mine.columns if c in summarize(w.grads, CONFIG_COLUMNS).columns]
    theirs = summarize(w.grads, CONFIG_COLUMNS)[cols]
    pd.testing.assert_frame_equal(mine[cols].reset_index(drop=True), theirs.reset_index(drop=True), check_dtype=False)


def test_tables_are_assembled_once_until_a_new_step():
    torch.manual_seed(2)
    model = Tiny()
    with resflow.watch(model, every=1) as w:
        loop(model, w, 3)
        a, b = w.grads, w.grads
        assert np.shares_memory(a["input_grad_norm"].to_numpy(), b["input_grad_norm"].to_numpy())
        a.loc[0, "input_grad_norm"] = -1.0  # the caller's copy: the kept table does not change
        assert w.grads.loc[0, "input_grad_norm"] != -1.0
        loop(model, w, 1, seed=1)
        assert len(w.grads) == 4 * len(b) // 3
        assert sorted(set(w.grads["step"])) == [0, 1, 2, 3]


def test_chunks_are_merged_as_a_binary_counter():
    """Rows kept as O(log n) chunks, whatever the number of recorded steps."""
    torch.manual_seed(3)
    model = Tiny(depth=2)
    with resflow.watch(model, every=1) as w:
        for s in range(40):
            loop(model, w, 1, seed=s)
            w._assemble()  # as a flush would
            assert len(w._tables["grads"].chunks) <= math.floor(math.log2(s + 1)) + 1
    assert len(w.grads) == 40 * 2


def test_in_memory_false_keeps_nothing_but_the_files(tmp_path):
    torch.manual_seed(4)
    model = Tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with resflow.watch(model, every=2, out=tmp_path / "files", in_memory=False) as w:
        loop(model, w, 5)
        assert all(not c.chunks for c in w._tables.values())
        assert not w._rows.grads and not w._rows.params  # this step's rows went to the files
        mid = w.grads
    model.load_state_dict(start)
    with resflow.watch(model, every=2, out=tmp_path / "memory") as kept:
        loop(model, kept, 5)
    for t in TABLES:
        assert (tmp_path / "files" / f"{t}.csv").read_bytes().count(b"\n") == (
            tmp_path / "memory" / f"{t}.csv"
        ).read_bytes().count(b"\n"), t
    np.testing.assert_array_equal(w.grads["input_grad_norm"], kept.grads["input_grad_norm"])
    np.testing.assert_array_equal(mid["input_grad_norm"], kept.grads["input_grad_norm"])
    assert list(w.train["step"]) == list(range(5))
    with pytest.raises(ResflowError, match="in_memory=False keeps nothing but the files: it needs out="):
        resflow.watch(model, in_memory=False)


@pytest.mark.parametrize("chunk", [3, 256])
def test_every_step_has_its_loss_and_total_gradient_norm(monkeypatch, tmp_path, chunk):
    monkeypatch.setattr(_TrainLog, "CHUNK", chunk)  # 3: the buffers are read mid-run, several times
    torch.manual_seed(5)
    model = Tiny()
    with resflow.watch(model, every=4, out=tmp_path / "run") as w:
        losses, norms = loop(model, w, 10)
    for train in (w.train, read_run(tmp_path / "run").train):
        assert list(train["step"]) == list(range(10))
        assert train["loss"].to_numpy() == pytest.approx(losses, rel=1e-6)
        assert train["grad_norm_total"].to_numpy() == pytest.approx(norms, rel=1e-6)


def test_a_failed_append_leaves_the_dir_as_the_last_flush_wrote_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    torch.manual_seed(6)
    model = Tiny()
    real = files.append_bytes
    calls = []

    def full_disk(path, data):
        calls.append(path.name)
        if len(calls) == 2:  # grads.csv was appended, params.csv fails half way
            real(path, data[: len(data) // 2])
            raise files.environment_error(OSError(errno.ENOSPC, "No space left on device"), path)
        real(path, data)

    with resflow.watch(model, every=1, out=out) as w:
        loop(model, w, 1)
        before = {t: (out / f"{t}.csv").read_bytes() for t in TABLES}
        monkeypatch.setattr(files, "append_bytes", full_disk)
        with pytest.raises(ResflowError, match="No space left on device"):
            loop(model, w, 1, seed=1)
        assert {t: (out / f"{t}.csv").read_bytes() for t in TABLES} == before
        read_run(out)  # still a valid results dir
        monkeypatch.setattr(files, "append_bytes", real)
        loop(model, w, 1, seed=2)  # the next flush writes the failed one's rows too
    assert sorted(set(read_run(out).grads["step"])) == [0, 1, 2]


def test_an_append_cut_short_by_a_kill_leaves_the_last_complete_flush(tmp_path):
    """A kill -9 between a table's append and meta.json's rewrite leaves bytes past what meta.json
    vouches for: readers read the vouched rows; a change inside them is still caught."""
    from typer.testing import CliRunner

    from resflow.cli.app import app

    out = tmp_path / "run"
    torch.manual_seed(7)
    model = Tiny()
    with resflow.watch(model, every=1, out=out) as w:
        loop(model, w, 3)
    want = read_run(out)
    with open(out / "grads.csv", "ab") as fh:  # half of a next step's rows, as a killed append leaves
        fh.write((out / "grads.csv").read_bytes().splitlines(keepends=True)[-1][:30])
    with open(out / "train.csv", "ab") as fh:
        fh.write(b"Tiny,0,3,0.5,")
    back = read_run(out)
    for t in TABLES:
        pd.testing.assert_frame_equal(getattr(back, t), getattr(want, t))
    assert CliRunner().invoke(app, ["show", str(out)]).exit_code == 0
    data = bytearray((out / "grads.csv").read_bytes())
    data[200] = ord("9") if data[200] != ord("9") else ord("8")  # inside the vouched rows
    (out / "grads.csv").write_bytes(bytes(data))
    with pytest.raises(ResflowError, match="grads.csv.* is not what resflow wrote"):
        read_run(out)
    (out / "grads.csv").write_bytes(bytes(data[:100]))  # shorter than vouched
    with pytest.raises(ResflowError, match="grads.csv.* holds .* but .* were written"):
        read_run(out)


def test_step_ranges():
    assert step_ranges([]) == []
    assert step_ranges([0]) == [[0, 0, 1]]
    assert step_ranges(list(range(0, 1000, 10))) == [[0, 990, 10]]
    assert step_ranges([0, 10, 20, 40, 41, 42]) == [[0, 20, 10], [40, 42, 1]]
    assert step_ranges([0, 10, 30]) == [[0, 10, 10], [30, 30, 1]]
