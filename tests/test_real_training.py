"""record / watch in real training runs: activation checkpointing, gradient accumulation, shared
weights, mixed precision (autocast, GradScaler) and torch.compile.

Every number is checked against an independent computation: retain_grad on each block's input in
one forward of the same model *without* checkpointing, on the concatenated batch (float64 norms of
x.grad, x and the block's parameter gradients), or the same loop run eagerly / unscaled.
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

import resflow
from resflow.errors import ResflowError

RTOL = 2e-5  # float32 sums against float64 ones
COLS = ("input_grad_norm", "activation_rms", "param_grad_norm")


class Res(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w, w)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class Net(nn.Module):
    """Four residual blocks; `ckpt` checkpoints them: "reentrant", "non-reentrant" (per block) or
    "sequential" (checkpoint_sequential, 2 segments, reentrant); `shared`: block 1 is block 0 again."""

    def __init__(self, w=8, depth=4, ckpt=None, shared=False):
        super().__init__()
        self.inp = nn.Linear(w, w)
        self.blocks = nn.Sequential(*[Res(w) for _ in range(depth)])
        self.head = nn.Linear(w, 3)
        self.ckpt, self.shared = ckpt, shared

    def order(self):
        """The block calls of one forward, in order."""
        b = list(self.blocks)
        return [b[0], b[0], *b[2:]] if self.shared else b

    def forward(self, x):
        h = self.inp(x)
        if self.ckpt == "sequential":
            return self.head(checkpoint_sequential(nn.Sequential(*self.order()), 2, h, use_reentrant=True))
        for block in self.order():
            h = block(h) if self.ckpt is None else checkpoint(block, h, use_reentrant=self.ckpt == "reentrant")
        return self.head(h)


CKPT = [None, "reentrant", "non-reentrant", "sequential"]


def data(n=8, w=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, w, generator=gen), torch.randint(3, (n,), generator=gen)


def ce(out, y):
    return nn.functional.cross_entropy(out, y)


def reference(model, x, y):
    """Per block call of one plain forward (no checkpointing) on (x, y): (||dloss/dx||, rms(x),
    ||dloss/dθ_block||) in float64, from retain_grad. The model is left as found."""
    model = copy.deepcopy(model)
    model.ckpt = None
    kept = []

    def keep(module, args):
        args[0].retain_grad()
        kept.append((module, args[0]))

    handles = [b.register_forward_pre_hook(keep) for b in model.blocks]
    x = x.detach().requires_grad_(True)
    ce(model(x), y).backward()
    for h in handles:
        h.remove()
    out = []
    for module, xi in kept:
        pg = math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in module.parameters()))
        out.append((xi.grad.double().norm().item(), xi.double().pow(2).mean().sqrt().item(), pg))
    return out


def assert_rows(got, want, rel=RTOL):
    assert list(got["layer"]) == list(range(len(want)))
    for k, col in enumerate(COLS):
        assert got[col].to_numpy() == pytest.approx([r[k] for r in want], rel=rel), col


def watch_step(model, batches, **kw):
    """One watched training step made of the micro-batches `batches`, each loss divided by their
    number (as accumulation loops do): the step's grads rows."""
    with resflow.watch(model, **kw) as w:
        for x, y in batches:
            (ce(model(x.detach().requires_grad_(True)), y) / len(batches)).backward()
        w.step()
    return w.grads


# ---------------------------------------------------------------------------------------------
# Checkpointing


@pytest.mark.parametrize("ckpt", CKPT[1:])
def test_checkpointing_records_the_numbers_of_the_plain_model(ckpt):
    torch.manual_seed(1)
    model = Net(ckpt=ckpt)
    x, y = data()
    want = reference(model, x, y)
    got = resflow.record(model, x, lambda out: ce(out, y)).grads
    assert_rows(got, want)
    assert set(got["depth"]) == {4}
    got = watch_step(model, [(x, y)])
    assert_rows(got, want)
    assert list(got["micro_batches"]) == [1] * 4


@pytest.mark.parametrize("reentrant", [True, False])
def test_hugging_face_gradient_checkpointing_equals_without(reentrant):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    cfg = transformers.GPT2Config(
        n_layer=3, n_embd=32, n_head=2, vocab_size=61, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    model = transformers.GPT2LMHeadModel(cfg).train()
    ids = torch.randint(61, (2, 12), generator=torch.Generator().manual_seed(3))
    plain = resflow.record(model, {"input_ids": ids}).grads
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.transformer.gradient_checkpointing
    ckpt = resflow.record(model, {"input_ids": ids}).grads
    assert list(ckpt["module"]) == [f"transformer.h.{i}" for i in range(3)]
    for col in COLS:
        assert ckpt[col].to_numpy() == pytest.approx(plain[col].to_numpy(), rel=1e-5), col


# ---------------------------------------------------------------------------------------------
# Accumulation (and with checkpointing, and shared weights)


@pytest.mark.parametrize("ckpt", CKPT)
def test_accumulation_equals_the_concatenated_batch(ckpt):
    """4 micro-batches of 4, each loss / 4: per block the norm over all 16 samples, exactly what one
    forward of the concatenated batch gives; activation_rms over all of them too."""
    torch.manual_seed(4)
    model = Net(ckpt=ckpt)
    x, y = data(16)
    micro = list(zip(x.split(4), y.split(4)))
    got = watch_step(model, micro)
    assert_rows(got, reference(model, x, y))
    assert list(got["micro_batches"]) == [4] * 4


@pytest.mark.parametrize("ckpt", [None, "reentrant", "non-reentrant"])
def test_shared_weights_accumulation_and_checkpointing_side_by_side(ckpt):
    """A block called twice per forward stays two rows (two calls), with 2 micro-batches and
    checkpointing: never 4 rows (the micro-batches) nor more (the recompute)."""
    torch.manual_seed(5)
    model = Net(depth=3, shared=True, ckpt=ckpt)  # calls: blocks.0, blocks.0, blocks.2
    x, y = data(8)
    want = reference(model, x, y)
    got = watch_step(model, list(zip(x.split(4), y.split(4))))
    assert list(got["module"]) == ["blocks.0", "blocks.0", "blocks.2"]
    assert_rows(got, want)
    assert list(got["micro_batches"]) == [2] * 3


def test_micro_batches_of_unequal_size():
    """Sizes 5 and 3 with the losses weighted by size: the concatenated batch's mean loss."""
    torch.manual_seed(6)
    model = Net()
    x, y = data(8)
    with resflow.watch(model) as w:
        for xs, ys in ((x[:5], y[:5]), (x[5:], y[5:])):
            (ce(model(xs.detach().requires_grad_(True)), ys) * len(xs) / 8).backward()
        w.step()
    assert_rows(w.grads, reference(model, x, y))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
def test_an_eval_forward_in_a_recorded_step_is_not_a_micro_batch():
    torch.manual_seed(7)
    model = Net(ckpt="reentrant")  # (its forward runs without gradients too: told apart by the recompute)
    x, y = data(8)
    with resflow.watch(model) as w:
        with torch.no_grad():
            model(torch.randn(3, 8))
        ce(model(x.detach().requires_grad_(True)), y).backward()
        w.step()
    assert_rows(w.grads, reference(model, x, y))
    assert list(w.grads["micro_batches"]) == [1] * 4


def test_watch_accumulates_over_steps_and_param_norms_read_at_step():
    """Two recorded steps of 2 micro-batches with an optimizer between: each step against its own
    reference at the weights of that step; param_grad_norm is the accumulated .grad at w.step()."""
    torch.manual_seed(8)
    model = Net(ckpt="non-reentrant")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    want = {}
    with resflow.watch(model) as w:
        for step in range(2):
            x, y = data(8, seed=step)
            want[step] = reference(model, x, y)
            for xs, ys in zip(x.split(4), y.split(4)):
                (ce(model(xs.detach().requires_grad_(True)), ys) / 2).backward()
            w.step()
            opt.step()
            opt.zero_grad()
    for step in range(2):
        assert_rows(w.grads[w.grads["step"] == step].reset_index(drop=True), want[step])


def test_a_recorded_step_where_no_block_ran_warns():
    model = Net()
    with resflow.watch(model) as w:
        with pytest.warns(UserWarning, match="step 0 was to be recorded, but no block of Net ran a forward"):
            w.step()
        ce(model(data()[0]), data()[1]).backward()
        w.step()
    assert w.recorded == [1]


def test_step_never_called_is_an_error():
    model = Net()
    with pytest.raises(ResflowError, match=r"w.step\(\) was never called while blocks ran 4 times"):
        with resflow.watch(model):
            ce(model(data()[0]), data()[1]).backward()


# ---------------------------------------------------------------------------------------------
# Mixed precision


def test_autocast_bfloat16_norms_are_summed_in_float32():
    """Under autocast the blocks' inputs and their gradients are bfloat16; their norms, summed in
    float32, agree with float64 sums to float32 rounding (bfloat16 sums would be ~1e-2 off)."""
    torch.manual_seed(9)
    model = Net(w=64)
    x, y = data(32, 64)
    kept = []

    def keep(module, args):
        args[0].retain_grad()
        kept.append((module, args[0]))

    handles = [b.register_forward_pre_hook(keep) for b in model.blocks]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce(model(x), y).backward()
    for h in handles:
        h.remove()
    assert all(xi.dtype == torch.bfloat16 for _, xi in kept)
    want = [
        (
            xi.grad.double().norm().item(),
            xi.double().pow(2).mean().sqrt().item(),
            math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in m.parameters())),
        )
        for m, xi in kept
    ]
    model.zero_grad()

    def loss(out):
        return ce(out, y)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = resflow.record(model, x, loss).grads
    assert_rows(got, want, rel=1e-6)
    with resflow.watch(model) as w:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ce(model(x), y).backward()
        w.step()
    assert_rows(w.grads, want, rel=1e-6)


@pytest.mark.parametrize("unscale_first", [False, True])
def test_grad_scaler_scale_is_divided_out(unscale_first):
    """A GradScaler loop records the numbers of the same loop without it, whether or not
    `scaler.unscale_(opt)` ran before w.step()."""
    torch.manual_seed(10)
    model = Net()
    twin = copy.deepcopy(model)
    batches = [data(8, seed=s) for s in range(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with resflow.watch(model, grad_scaler=scaler) as w:
        for x, y in batches:
            scaler.scale(ce(model(x), y)).backward()
            if unscale_first:
                scaler.unscale_(opt)
            w.step()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    assert scaler.get_scale() == 2.0**10  # (no overflow: every step was taken)
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1)
    with resflow.watch(twin) as plain:
        for x, y in batches:
            ce(twin(x), y).backward()
            plain.step()
            opt2.step()
            opt2.zero_grad()
    for col in ("input_grad_norm", "param_grad_norm"):
        assert w.grads[col].to_numpy() == pytest.approx(plain.grads[col].to_numpy(), rel=1e-6, nan_ok=True), col
    assert w.params["grad_norm"].to_numpy() == pytest.approx(plain.params["grad_norm"].to_numpy(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# torch.compile


def compiled_run(compile_how: str, when: str, every: int):
    """6 SGD steps of the same model and batches, eagerly and compiled ("torch.compile": the
    OptimizedModule is watched; "model.compile": in place), the model compiled and run before
    entering watch or inside it: (eager grads, compiled grads, graph breaks while watched)."""
    from torch._dynamo.utils import counters

    gen = torch.Generator().manual_seed(12)
    batches = [(torch.randn(8, 8, generator=gen), torch.randint(3, (8,), generator=gen)) for _ in range(6)]
    torch.manual_seed(11)
    eager = Net()
    model = copy.deepcopy(eager)

    def train(model, w_target, compile_inside=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with resflow.watch(w_target, every=every) as w:
            call = compile_inside() if compile_inside else w_target
            for x, y in batches:
                ce(call(x), y).backward()
                w.step()
                opt.step()
                opt.zero_grad()
        return w.grads

    want = train(eager, eager)
    torch._dynamo.reset()
    if compile_how == "torch.compile":
        target = torch.compile(model, backend="eager")
    else:
        model.compile(backend="eager")
        target = model
    if when == "before":
        target(batches[0][0])  # compiled and run: its graph has no hooks
    counters.clear()
    got = train(model, target)
    return want, got, sum(counters["graph_break"].values())


@pytest.mark.parametrize("compile_how", ["torch.compile", "model.compile"])
@pytest.mark.parametrize("when", ["before", "inside"])
def test_a_compiled_model_records_what_eager_does(compile_how, when):
    want, got, breaks = compiled_run(compile_how, when, every=2)
    assert list(got["module"]) == list(want["module"])  # (no `_orig_mod.` prefix)
    assert list(got["step"]) == list(want["step"]) and sorted(set(got["step"])) == [0, 2, 4]
    for col in COLS:
        assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=1e-6), col
    assert breaks == 0  # the recorded steps run eagerly: no hook is ever traced
