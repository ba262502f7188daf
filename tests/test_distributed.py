"""watch under DistributedDataParallel and FSDP2 (fully_shard): 2 processes on the CPU (gloo),
started here (as torchrun would: one Python process per rank) and ended within a time limit. (Not
torch.multiprocessing: its children share the test process's stdout, which pytest-xdist's workers
use to talk to the controller.)

Reference: a single process training the same model on the concatenated global batch, with the
ranks' losses averaged (what DDP's and FSDP2's gradient averaging computes): its watch rows must
equal rank 0's, to float32 rounding. Each rank runs 2 micro-batches per step (loss / 2).
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import resflow
from resflow.errors import ResflowError

WORLD, STEPS, MICRO, PER_RANK, WIDTH = 2, 2, 2, 4, 8
TIMEOUT = 120  # seconds for the whole 2-process run (startup dominates: imports)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")


class Res(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w, w)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class Net(nn.Module):
    def __init__(self, w=WIDTH, depth=3):
        super().__init__()
        self.inp = nn.Linear(w, w)
        self.blocks = nn.ModuleList([Res(w) for _ in range(depth)])
        self.head = nn.Linear(w, 3)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def global_batches():
    """Per step: the global batch (WORLD * MICRO * PER_RANK samples), rank r's slice r."""
    gen = torch.Generator().manual_seed(3)
    n = WORLD * MICRO * PER_RANK
    return [(torch.randn(n, WIDTH, generator=gen), torch.randint(3, (n,), generator=gen)) for _ in range(STEPS)]


def ce(out, y):
    return nn.functional.cross_entropy(out, y)


def new_model():
    torch.manual_seed(0)
    return Net()


def _worker(rank: int, kind: str, port: int, out: str) -> None:
    """One rank: wrap, watch STEPS steps of MICRO micro-batches of its slice, save its tables."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = new_model()
        errors = {}
        try:
            resflow.watch(model)
        except ResflowError as err:
            errors["unwrapped"] = str(err)
        if kind == "ddp":
            wrapped = nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            wrapped = fully_shard(model)
        opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
        with resflow.watch(wrapped, out=os.path.join(out, "run"), every=1) as w:
            for x, y in global_batches():
                xs, ys = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
                for xm, ym in zip(xs.chunk(MICRO), ys.chunk(MICRO)):
                    (ce(wrapped(xm), ym) / MICRO).backward()
                w.step()
                opt.step()
                opt.zero_grad()
        w.grads.to_pickle(os.path.join(out, f"grads{rank}.pkl"))
        w.params.to_pickle(os.path.join(out, f"params{rank}.pkl"))
        with open(os.path.join(out, f"errors{rank}.json"), "w") as f:
            json.dump({**errors, "is_writer": w.is_writer}, f)
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(kind: str, out) -> None:
    """WORLD processes running _worker, each its own Python (stdout/stderr to files in `out`),
    waited for within TIMEOUT; killed (and the test failed) beyond it or if one fails."""
    port, here = free_port(), str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import test_distributed as t; t._worker(int(sys.argv[1]), {kind!r}, {port}, {str(out)!r})"
    procs = []
    try:
        for rank in range(WORLD):
            log = open(Path(out) / f"log{rank}.txt", "w")
            procs.append(
                subprocess.Popen([sys.executable, "-c", code, str(rank)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            )
            log.close()
        for rank, proc in enumerate(procs):
            try:
                code_ = proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{kind}: rank {rank} did not finish within {TIMEOUT} s")
            assert code_ == 0, (Path(out) / f"log{rank}.txt").read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def single_process():
    """The same training on the concatenated global batch, in one process: (grads, params)."""
    model = new_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with resflow.watch(model) as w:
        for x, y in global_batches():
            ce(model(x), y).backward()  # the mean over the global batch = the mean of the ranks' means
            w.step()
            opt.step()
            opt.zero_grad()
    return w.grads, w.params


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_data_parallel_watch_records_the_global_batch(kind, tmp_path):
    run_ranks(kind, tmp_path)
    want_grads, want_params = single_process()
    for rank in range(WORLD):
        grads = pd.read_pickle(tmp_path / f"grads{rank}.pkl")
        params = pd.read_pickle(tmp_path / f"params{rank}.pkl")
        assert list(grads["module"]) == list(want_grads["module"])  # (no `module.` prefix under DDP)
        for col in ("input_grad_norm", "activation_rms", "param_grad_norm"):
            assert grads[col].to_numpy() == pytest.approx(want_grads[col].to_numpy(), rel=1e-5, nan_ok=True), (rank, col)
        assert list(params["param"]) == list(want_params["param"])
        for col in ("grad_norm", "value_norm"):
            assert params[col].to_numpy() == pytest.approx(want_params[col].to_numpy(), rel=1e-5), (rank, col)
        assert set(grads["micro_batches"]) == {MICRO}
        info = json.loads((tmp_path / f"errors{rank}.json").read_text())
        assert info["is_writer"] == (rank == 0)
        assert "is initialised with 2 ranks but Net is not wrapped" in info["unwrapped"]
    # only rank 0 wrote the results dir: one writer, the global rows, the number of ranks
    back = resflow.results.read_run(tmp_path / "run")
    assert back.meta["ranks"] == WORLD
    assert back.grads["input_grad_norm"].to_numpy() == pytest.approx(
        want_grads["input_grad_norm"].to_numpy(), rel=1e-5, nan_ok=True
    )
    assert not math.isnan(back.grads["input_grad_norm"].iloc[0])


def test_fsdp1_is_refused():
    from resflow.measure.distributed import data_parallel

    class FakeDeepSpeed(nn.Module):  # a class from a `deepspeed` module, as DeepSpeedEngine is
        pass

    FakeDeepSpeed.__module__ = "deepspeed.runtime.engine"
    with pytest.raises(ResflowError, match="DeepSpeed engines are not supported"):
        data_parallel(FakeDeepSpeed())
    from torch.distributed.fsdp import FullyShardedDataParallel

    fake = FullyShardedDataParallel.__new__(FullyShardedDataParallel)  # (no process group needed to be told no)
    nn.Module.__init__(fake)
    with pytest.raises(ResflowError, match=r"FSDP1 \(FullyShardedDataParallel\) is not supported"):
        data_parallel(fake)
