"""The Recorder measures in its hooks, while tensors are hot; these tests check that what it reports
is still the tensors as they are at collect(): against norms computed directly by torch (an
independent path), after weights and gradients are changed in place, replaced, accumulated over two
backward passes, or updated by an optimizer between recorded steps; and that no hook outlives the
`with` block (a leaf input reused across steps must not collect hooks)."""

import pytest
import torch

from resflow.config.loading import load_config
from resflow.measure.data import data_generator, make_input, make_loss
from resflow.measure.device import input_shape
from resflow.measure.recorder import Recorder
from resflow.models import build_model


def setup(seed=0, **model):
    cfg = load_config(
        dict(dtype="float64", data=dict(batch_size=3), model=dict(depth=4, width=5, activation="tanh", residual=True, **model))
    )
    torch.manual_seed(seed)
    stack = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(seed)
    x = make_input(cfg.data, input_shape(cfg), gen).requires_grad_(True)
    loss_fn = make_loss(cfg.loss, tuple(x.shape), gen, "cpu", torch.float64)
    return stack, x, loss_fn


def direct(stack, rec):
    """params.csv values straight from the tensors now: ||p|| and ||p.grad|| per row, torch's own norm."""
    params = {id(p): p for p in stack.parameters()}
    rows = [(s.layer, n, p) for s in stack.sites() for n, p in s.params]
    assert [(l, n) for l, n, _ in rows] == list(zip(rec.param_layer, rec.param_name))
    value = [p.detach().norm().item() for _, _, p in rows]
    grad = [(p.grad.norm().item() if p.grad is not None else 0.0) for _, _, p in rows]
    assert len(params) == len({id(p) for _, _, p in rows})
    return value, grad


def site_grad_norms(stack):
    return [torch.cat([p.grad.reshape(-1) for _, p in s.params]).norm().item() for s in stack.sites()]


def test_weight_changed_in_place_after_backward_is_measured_again():
    stack, x, loss_fn = setup()
    w = stack.blocks[2].linear.weight
    with Recorder(stack) as rec:
        loss_fn(stack(x)).backward()
        with torch.no_grad():
            w.mul_(3.0)  # e.g. an optimizer step before collect()
        r = rec.collect()
    value, grad = direct(stack, r)
    assert r.param_value == pytest.approx(value, rel=1e-12)
    assert r.param_grad == pytest.approx(grad, rel=1e-12)
    i = r.param_name.index("linear.weight", r.param_layer.index(2))
    assert r.param_value[i] == pytest.approx(3.0 * torch.linalg.vector_norm(w / 3.0).item(), rel=1e-12)


@pytest.mark.parametrize("change", ["in_place", "replaced", "set_to_none"])
def test_grad_changed_after_backward_is_measured_again(change):
    stack, x, loss_fn = setup()
    with Recorder(stack) as rec:
        loss_fn(stack(x)).backward()
        lin = stack.blocks[1].linear
        if change == "in_place":
            lin.weight.grad.mul_(-7.0)  # e.g. gradient clipping before collect()
        elif change == "replaced":
            lin.weight.grad = torch.ones_like(lin.weight)
        else:
            lin.bias.grad = None
        r = rec.collect()
    value, grad = direct(stack, r)
    assert r.param_grad == pytest.approx(grad, rel=1e-12)
    if change != "set_to_none":
        assert r.param_grad_norm == pytest.approx(site_grad_norms(stack), rel=1e-12)
    assert r.param_value == pytest.approx(value, rel=1e-12)


def test_two_backward_passes_report_the_accumulated_gradient():
    stack, x, loss_fn = setup()
    with Recorder(stack) as rec:
        out = stack(x)
        loss_fn(out).backward(retain_graph=True)
        (2.5 * loss_fn(out)).backward()  # grads accumulate in place: 3.5x the first
        r = rec.collect()
    value, grad = direct(stack, r)
    assert r.param_grad == pytest.approx(grad, rel=1e-12)
    assert r.param_grad_norm == pytest.approx(site_grad_norms(stack), rel=1e-12)
    stack.zero_grad(set_to_none=True)
    loss_fn(stack(x)).backward()
    assert r.param_grad_norm == pytest.approx([3.5 * g for g in site_grad_norms(stack)], rel=1e-12)


def test_training_steps_with_one_recorder_measure_each_steps_weights():
    # as resflow.train.loop does: one Recorder, reset per step, weights updated by the optimizer in place
    stack, x, loss_fn = setup(seed=1, norm="pre")
    opt = torch.optim.Adam(stack.parameters(), lr=0.1)
    recorder = Recorder(stack)
    seen = []
    for _ in range(4):
        opt.zero_grad(set_to_none=False)  # grads zeroed in place: same tensors, new versions
        x.grad = None
        recorder.reset()
        with recorder:
            loss_fn(stack(x)).backward()
            r = recorder.collect()
        value, grad = direct(stack, r)
        assert r.param_value == pytest.approx(value, rel=1e-12)
        assert r.param_grad == pytest.approx(grad, rel=1e-12)
        assert r.param_grad_norm == pytest.approx(site_grad_norms(stack), rel=1e-12)
        seen.append(r.param_value)
        opt.step()
    assert all(a != b for a, b in zip(seen, seen[1:]))  # the weights did change, and so did the record


def test_no_hook_outlives_the_with_block():
    stack, x, loss_fn = setup()
    for _ in range(3):  # the same leaf input every step
        with Recorder(stack) as rec:
            loss_fn(stack(x)).backward()
            rec.collect()
    assert not x._backward_hooks
    assert all(not b._forward_pre_hooks for b in stack.blocks)
    # a backward after the block leaves the recorder's numbers alone
    before = rec.collect().input_grad_norm
    loss_fn(stack(x)).backward()
    assert rec.collect().input_grad_norm == before


@pytest.mark.parametrize("norm", ["none", "pre", "post"])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_site_params_are_named_parameters_in_order(norm, bias):
    stack, _, _ = setup(norm=norm, bias=bias)
    block = stack.blocks[0]
    expected = [(n.replace("pre.", "norm.").replace("post.", "norm."), p) for n, p in block.named_parameters()]
    got = list(block.sites(0)[0].params)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert all(a is b for (_, a), (_, b) in zip(got, expected))


def test_parameter_changed_between_forward_and_backward_is_measured_again():
    # values are measured as each site is entered in the forward pass; a change after that (here a
    # bias, which autograd does not save) must show at collect()
    stack, x, loss_fn = setup()
    b = stack.blocks[1].linear.bias
    with Recorder(stack) as rec:
        out = stack(x)
        with torch.no_grad():
            b.add_(5.0)
        loss_fn(out).backward()
        r = rec.collect()
    value, grad = direct(stack, r)
    assert r.param_value == pytest.approx(value, rel=1e-12)
    assert r.param_grad == pytest.approx(grad, rel=1e-12)
    i = r.param_name.index("linear.bias", r.param_layer.index(1))
    assert r.param_value[i] == pytest.approx(torch.linalg.vector_norm(b.detach()).item(), rel=1e-12)


def test_two_forwards_before_collect_is_a_clear_error():
    stack, x, loss_fn = setup()
    with Recorder(stack) as rec:
        stack(x)
        loss_fn(stack(x)).backward()
        with pytest.raises(RuntimeError, match="run one forward per collect"):
            rec.collect()


def test_site_norm_from_parameter_norms_does_not_overflow():
    from resflow.measure.recorder import group_norm
    from resflow.quantities.activation_rms import activation_rms

    assert group_norm([3.0, 4.0]) == 5.0
    assert group_norm([1e200, 1e200]) == pytest.approx(2**0.5 * 1e200, rel=1e-15)  # sum of squares would be inf
    assert group_norm([]) == 0.0
    assert activation_rms(6.0, 4) == 3.0


def _float32_case(**model):
    """A float32 stack and an independent reference: every site input's gradient from
    torch.autograd.grad, and the site inputs, as float32 tensors."""
    from resflow.experiment import prepare_seed

    cfg = load_config(dict(dtype="float32", data=dict(batch_size=4), model=dict(width=16, **model)))
    stack, x, loss_fn = prepare_seed(cfg, 0, torch.device("cpu"))
    inputs = []
    handles = [s.module.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for s in stack.sites()]
    try:
        grads = torch.autograd.grad(loss_fn(stack(x)), inputs)
    finally:
        for h in handles:
            h.remove()
    return cfg, list(grads), [t.detach() for t in inputs]


CASES_32 = [
    (dict(depth=40, activation="tanh", init=dict(scale=0.3)), "underflow"),  # gradients ~1e-24 at layer 0
    (dict(depth=18, activation="relu", init=dict(scheme="normal", scale=30.0)), "overflow"),  # entries up to ~1e24
]


@pytest.mark.parametrize("model, what", CASES_32)
def test_float32_norms_that_under_or_overflow_are_taken_in_float64(model, what, monkeypatch):
    import math

    from resflow.experiment import measure_seed
    from resflow.measure import recorder as recorder_module

    cfg, grads, inputs = _float32_case(**model)
    ref_grad = [g.double().norm().item() for g in grads]  # float64 sums of the same float32 tensors
    ref_x = [t.double().norm().item() for t in inputs]
    # the case is what it says: torch's float32 norm of some of these finite tensors is 0 or inf
    f32 = [t.norm().item() for t in grads + inputs]
    assert all(torch.isfinite(t).all() for t in grads + inputs)
    assert (0.0 in f32) if what == "underflow" else (math.inf in f32)
    for cheap in (True, False):  # in the hooks (the CPU), and by repeating the step (other devices)
        monkeypatch.setattr(recorder_module, "reads_cheaply", lambda t, cheap=cheap: cheap)
        rec = measure_seed(cfg, 0, torch.device("cpu"))
        assert all(math.isfinite(v) and v > 0 for v in rec.input_grad_norm + rec.activation_rms)
        assert rec.input_grad_norm == pytest.approx(ref_grad, rel=1e-6)
        numel = inputs[0].numel()
        assert [v * numel**0.5 for v in rec.activation_rms] == pytest.approx(ref_x, rel=1e-6)
        assert rec.norms_exact


def test_exact_norms_match_float64_and_keep_pieces_small():
    from resflow.measure.recorder import EXACT_PIECE, exact_norms, norms_as_floats

    t = torch.randn(3 * EXACT_PIECE + 5) * 1e-24
    (n,) = exact_norms([t])
    assert n.dtype == torch.float64 and n.item() == pytest.approx(t.double().norm().item(), rel=1e-12)
    assert t.norm().item() == 0.0  # (torch's float32 norm of it)
    assert norms_as_floats([t, torch.ones(4)]) == pytest.approx([t.double().norm().item(), 2.0], rel=1e-12)


@pytest.mark.parametrize("cheap", [True, False])
def test_batched_seeds_under_or_overflowing_in_float32_match_the_sequential_path(cheap, monkeypatch):
    import math

    from resflow.experiment import measure_all, measure_seed
    from resflow.measure import batched
    from resflow.measure import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "reads_cheaply", lambda t: cheap)
    monkeypatch.setattr(batched, "reads_cheaply", lambda t: cheap)
    for model, _ in CASES_32:
        cfg = load_config(dict(dtype="float32", seeds=3, data=dict(batch_size=4), model=dict(width=16, **model)))
        assert batched.supports(cfg)
        together = dict(measure_all(cfg, torch.device("cpu")))
        for seed in cfg.seed_list:
            alone = measure_seed(cfg, seed, torch.device("cpu"))
            got = together[seed]
            assert all(math.isfinite(v) and v > 0 for v in got.input_grad_norm + got.activation_rms)
            assert got.input_grad_norm == pytest.approx(alone.input_grad_norm, rel=1e-5)
            assert got.activation_rms == pytest.approx(alone.activation_rms, rel=1e-5)
            assert got.param_grad == pytest.approx(alone.param_grad, rel=1e-5)


def test_batched_parameter_norms_that_underflow_are_taken_in_float64_on_any_device(monkeypatch):
    """Weights ~1e-25 (their float32 squares are 0): batched.measure_seeds re-measures those parameter
    norms itself, also where it cannot read site norms cheaply (the per-seed, non-CPU path)."""
    from resflow.experiment import prepare_seed
    from resflow.measure import batched
    from resflow.measure import recorder as recorder_module

    cfg = load_config(
        dict(
            dtype="float32",
            seeds=2,
            data=dict(batch_size=4),
            model=dict(depth=3, width=16, init=dict(scheme="normal", scale=1e-24)),
        )
    )
    for cheap in (True, False):
        monkeypatch.setattr(recorder_module, "reads_cheaply", lambda t: cheap)
        monkeypatch.setattr(batched, "reads_cheaply", lambda t: cheap)
        records = batched.measure_seeds(cfg, cfg.seed_list, torch.device("cpu"), torch.float32)
        for seed, rec in zip(cfg.seed_list, records):
            stack, _, _ = prepare_seed(cfg, seed, torch.device("cpu"))  # the same draws, one seed
            params = [(name, p) for s in stack.sites() for name, p in s.params]
            weights = [p for name, p in params if name.endswith("weight")]  # (the biases are exactly 0 here)
            assert max(p.detach().norm().item() for p in weights) == 0.0  # (torch's float32 norm: underflowed)
            expected = [p.detach().double().norm().item() for _, p in params]
            assert rec.param_value == pytest.approx(expected, rel=1e-6)
            assert all(v > 0 for (name, _), v in zip(params, rec.param_value) if name.endswith("weight"))
