"""All seeds of one MLP config in one pass: the seed is a leading dimension of every weight.

A depth-50 width-64 MLP is tiny; run seed by seed, its time goes to Python and op dispatch, not
arithmetic. Stacking S seeds' weights into (S, ...) tensors and using batched matmuls makes one
forward/backward do the work of S, for the same per-layer overhead.

Initialisation is the sequential path's, draw for draw: each seed's parameters are those that
`build_model` gives after `torch.manual_seed(seed)` (its modules' constructors draw, then
`initialize`): the constructors' draws are replayed (only the RNG's advance matters), then
`init_linears` draws each layer's weight and bias straight into that seed's slice of the stacked
tensors. Those draws, the same in both paths, cost as much as a shallow point's forward and
backward; points that differ only in init scale (an init-scale sweep) share them: a process keeps
the last set (`_drawn`), and each point multiplies a copy by its scale (docs/performance.md).
Inputs and losses come from each seed's own data generator, as in `experiment.measure_seed`.
The numbers equal the sequential path's up to rounding (batched kernels may sum in another
order): float64 to 1e-12 relative, float32 to 1e-5 (tests: tests/test_batched.py).

Used by `experiment.run` when `supports(cfg)`; every other model runs seed by seed.
"""

from __future__ import annotations

import functools
from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from resflow.measure.data import data_generator, make_input, make_loss
from resflow.measure.recorder import Record, exact_norms, inexact_norm, inexact_norms, reads_cheaply
from resflow.models import build_model
from resflow.models.activations import ACTIVATIONS
from resflow.models.init import SCALED_AFTER_DRAW, init_linears, seed_rng

ELEMENT_BUDGET = 1 << 24  # stacked activations per chunk of seeds (x depth x batch x width)


def supports(cfg) -> bool:
    """Batched when there is more than one seed of an MLP stack (not shared weights, no dataset's
    stem and head, no BatchNorm or GroupNorm: those are measured one seed at a time)."""
    m = cfg.model
    return (
        cfg.seeds > 1
        and m.batched_seeds  # the block family says so (an MLP stack)
        and not m.share_weights
        and cfg.data.dataset is None
        and (m.norm == "none" or m.norm_type in ("layernorm", "rmsnorm"))
    )


def chunks(cfg, seeds: list[int]) -> list[list[int]]:
    """Seeds in groups small enough that a group's activations stay within ELEMENT_BUDGET."""
    per_seed = cfg.model.depth * cfg.data.batch_size * cfg.model.width
    size = max(1, min(len(seeds), ELEMENT_BUDGET // max(per_seed, 1)))
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


class StackedMLP:
    """S seeds' parameters of one MLP config, stacked: every tensor (S, *shape of the parameter)."""

    def __init__(self, cfg, seeds: list[int], device, dtype):
        self.cfg = cfg.model
        init = cfg.model.init
        self.template, drawn = _drawn(_DrawKey(cfg.model, tuple(seeds), device, dtype))
        scaled = set()  # the weights that `init.scale` multiplies after their draw (not in the memo's values)
        if init.scheme in SCALED_AFTER_DRAW and init.scale != 1:  # (x * 1.0 == x: skipped, as init does)
            scaled = {id(b.linear.weight) for b in self.template.blocks}
        self.stacked = {
            id(p): (torch.mul(v, init.scale) if id(p) in scaled else v.clone()).requires_grad_(True)
            for p, v in zip(self.template.parameters(), drawn)
        }
        self.sites = self.template.sites()
        self.act = ACTIVATIONS[self.cfg.activation]

    def _linear(self, block, u):  # u: (S, B, W)
        w = self.stacked[id(block.linear.weight)]  # (S, W, W)
        if block.linear.bias is None:
            return torch.bmm(u, w.transpose(1, 2))
        return torch.baddbmm(self.stacked[id(block.linear.bias)].unsqueeze(1), u, w.transpose(1, 2))

    def _norm(self, module, u):  # the template's LayerNorm / RMSNorm, with per-seed weights
        if isinstance(module, nn.Identity):
            return u
        weight = self.stacked[id(module.weight)].unsqueeze(1)  # (S, 1, W)
        if isinstance(module, nn.LayerNorm):
            bias = self.stacked[id(module.bias)].unsqueeze(1)
            return F.layer_norm(u, module.normalized_shape, eps=module.eps) * weight + bias
        return u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + module.eps) * weight

    def block(self, block, x):  # MLPBlock.forward, seeds batched: x (S, B, W)
        u = self._norm(block.pre, x)
        h = self._linear(block, self.act(u)) if block.preactivation else self.act(self._linear(block, u))
        y = x + block.alpha * h if block.residual else h
        return self._norm(block.post, y)


MEMO_BYTES = 64 << 20  # the largest set of drawn parameters a process keeps for its next point


class _DrawKey:
    """What decides a StackedMLP's template and draws: the model config (less the init scale where
    it multiplies after the draws), the seeds, device and dtype. Hashable, for `_drawn`'s memo."""

    def __init__(self, model, seeds: tuple[int, ...], device, dtype):
        self.model, self.seeds, self.device, self.dtype = model, seeds, device, dtype
        init = {k: v for k, v in vars(model.init).items() if not (k == "scale" and model.init.scheme in SCALED_AFTER_DRAW)}
        fields = tuple((k, repr(v)) for k, v in vars(model).items() if k != "init")
        self.key = (type(model).__name__, fields, tuple(sorted(init.items())), seeds, str(device), dtype)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _DrawKey) and self.key == other.key

    def unscaled_init(self):
        """The init config the draws are made with: scale 1 where `init.scale` multiplies afterwards."""
        init = self.model.init
        return SimpleNamespace(**{**vars(init), "scale": 1.0}) if init.scheme in SCALED_AFTER_DRAW else init

    def nbytes(self) -> int:
        m = self.model
        per_layer = m.width * m.width + (m.width if m.bias else 0)
        return len(self.seeds) * m.depth * per_layer * torch.tensor([], dtype=self.dtype).element_size()


def _drawn(key: _DrawKey):
    """(template, the stacked values of its parameters in order): each seed's as `build_model` gives
    them after `torch.manual_seed(seed)`, with `key.unscaled_init()`. The values are never changed
    (callers copy them). A sweep's points that differ only in init scale (an init-scale sweep: the
    critical σ_w) share their draws, which are most of a small point's time: one set, the last, is
    kept per process (`_memo`), when it is at most MEMO_BYTES."""
    if key.nbytes() <= MEMO_BYTES:
        return _memo(key)
    return _draw(key)


@functools.lru_cache(maxsize=1)
def _memo(key: _DrawKey):
    return _draw(key)


def forget_shared_draws() -> None:
    """Drop the draws this process keeps for its next point (the benchmarks time a cold point)."""
    _memo.cache_clear()


def _draw(key: _DrawKey):
    device, dtype, seeds = key.device, key.dtype, key.seeds
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the template's own draws: not the caller's RNG
        template = build_model(key.model, device=device, dtype=dtype, init=False)
    linears = [b.linear for b in template.blocks]
    drawn = {id(t) for lin in linears for t in (lin.weight, lin.bias) if t is not None}
    stacked = {}
    for p in template.parameters():  # weights and biases are all drawn below; norms' copied
        shape = (len(seeds), *p.shape)
        stacked[id(p)] = p.new_empty(shape) if id(p) in drawn else p.detach().unsqueeze(0).expand(shape).clone()
    pairs = [(stacked[id(lin.weight)], stacked[id(lin.bias)] if lin.bias is not None else None) for lin in linears]
    init = key.unscaled_init()
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for s, seed in enumerate(seeds):  # build_model's draws, seed by seed, in the same order
            seed_rng(seed, device)
            _replay_constructor_draws(linears, device, dtype)
            init_linears([(w[s], b[s] if b is not None else None) for w, b in pairs], init)
    return template, [stacked[id(p)] for p in template.parameters()]


def measure_seeds(cfg, seeds: list[int], device, dtype) -> list[Record]:
    """One Record per seed, equal to `experiment.measure_seed`'s, from one batched pass."""
    from resflow.measure.device import input_shape

    model = StackedMLP(cfg, seeds, device, dtype)
    xs, losses = [], []
    for seed in seeds:
        gen = data_generator(seed)
        x = make_input(cfg.data, input_shape(cfg), gen).to(device=device, dtype=dtype)
        xs.append(x)
        losses.append(make_loss(cfg.loss, tuple(x.shape), gen, device, dtype))
    x = torch.stack(xs).requires_grad_(True)  # (S, B, W)

    # Norms are taken where the tensors are hot (as resflow.measure.recorder does): ||x_l|| per seed in the
    # forward pass; when dloss/dx_l arrives, its norm and those of block l's weights and gradients.
    params = list(model.template.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    stacked = [model.stacked[id(p)] for p in params]
    site_params = [list(dict.fromkeys(index[id(p)] for _, p in s.params)) for s in model.sites]
    n = len(model.sites)
    x_norms, g_norms, p_grad, p_value = [None] * n, [None] * n, [None] * len(params), [None] * len(params)

    def on_grad(layer, g):
        g_norms[layer] = _checked(torch.linalg.vector_norm(g, dim=(1, 2)), g)  # (S,)
        for i in site_params[layer]:
            t = stacked[i]
            if p_grad[i] is None and t.grad is not None:
                p_grad[i], p_value[i] = _per_seed_norm(t.grad), _per_seed_norm(t.detach())

    numel = x[0].numel()
    for layer, block in enumerate(model.template.blocks):
        x_norms[layer] = _checked(torch.linalg.vector_norm(x.detach(), dim=(1, 2)), x.detach())
        x.register_hook(partial(on_grad, layer))
        x = model.block(block, x)
    sum(loss(out) for loss, out in zip(losses, x.unbind(0))).backward()

    zero = x_norms[0].new_zeros(len(seeds))
    for i, t in enumerate(stacked):  # anything not ready in the backward pass
        if p_grad[i] is None:
            p_grad[i] = _per_seed_norm(t.grad) if t.grad is not None else zero
            p_value[i] = _per_seed_norm(t.detach())
    grad_norm = torch.stack([g if g is not None else zero for g in g_norms])  # (L, S)
    site = torch.stack([grad_norm, torch.stack(x_norms)]).double().cpu()  # (2, L, S): one transfer
    param = torch.stack([torch.stack(p_grad), torch.stack(p_value)]).double().cpu()  # (2, P, S)

    # Norms that may have under/overflowed in `dtype` (resflow.measure.recorder.inexact_norm): a parameter's
    # are re-measured here in float64 (its tensor is alive); a seed with such a site norm is marked,
    # and experiment.measure_all runs that seed again on its own, with float64 norms.
    redo = inexact_norms(param.permute(0, 2, 1), [t[0].numel() for t in stacked], dtype).any(dim=1)  # (2, P)
    redo[0] &= torch.tensor([t.grad is not None for t in stacked])  # (no gradient: its zeros stand)
    for kind, i in redo.nonzero().tolist():
        t = stacked[i].grad if kind == 0 else stacked[i].detach()
        param[kind, i] = torch.stack(exact_norms(t.unbind(0))).to(param)
    site_vals, param_vals = site.permute(2, 0, 1).tolist(), param.permute(2, 0, 1).tolist()
    hooked = [layer for layer, g in enumerate(g_norms) if g is not None]

    # the primitives per seed; the quantities are derived from them by the registry, as the recorder's are
    rows = [(s.layer, name, index[id(p)]) for s in model.sites for name, p in s.params]
    row_site = [i for i, s in enumerate(model.sites) for _ in s.params]
    records = []
    for s in range(len(seeds)):
        (gn, xn), (pgrad, pval) = site_vals[s], param_vals[s]
        rec = Record(
            layer=[site.layer for site in model.sites],
            sublayer=[site.sublayer for site in model.sites],
            site={"input_grad": gn, "input": xn},
            param_layer=[r[0] for r in rows],
            param_name=[r[1] for r in rows],
            param_site=row_site,
            numel=[numel] * n,
            norms_exact=reads_cheaply(x)  # (then _checked took any such norm again already)
            or not any(inexact_norm(v, numel, dtype) for v in [*(gn[layer] for layer in hooked), *xn]),
        )
        rec.set_param("grad", [pgrad[r[2]] for r in rows])
        rec.set_param("value", [pval[r[2]] for r in rows])
        records.append(rec)
    return records


def _checked(norms: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-seed `norms` (S,) of `t` (S, ...), those that may have under/overflowed in t's dtype taken
    again in float64, on the CPU (where reading them costs no device wait); as resflow.measure.recorder does."""
    if not reads_cheaply(t):
        return norms
    per_seed = t[0].numel()
    redo = [s for s, v in enumerate(norms.tolist()) if inexact_norm(v, per_seed, t.dtype)]
    if not redo:
        return norms
    norms = norms.double()
    for s, exact in zip(redo, exact_norms([t[s] for s in redo])):
        norms[s] = exact
    return norms


def _per_seed_norm(t: torch.Tensor) -> torch.Tensor:  # (S, ...) -> (S,)
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def _replay_constructor_draws(linears, device, dtype) -> None:
    """Advance torch's RNG exactly as the nn.Linear constructors inside `build_model` do.

    Their values are overwritten by `initialize`, so only the draws matter. Each constructor's
    reset_parameters draws weight.numel() then bias.numel() uniforms; on the CPU (one Mersenne
    Twister word per float32 element, two per float64, in order) one call of the total size draws
    the same stream, and raw integer draws (`random_`: an int64 takes two words) advance it the
    same way without converting them to floats. Elsewhere (CUDA's Philox advances per call) the
    constructors are replayed one by one. tests/test_batched.py checks the result bit for bit.
    """
    if device.type != "cpu":
        for linear in linears:
            nn.Linear.reset_parameters(linear)
        return
    total = sum(lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0) for lin in linears)
    words = total * (2 if dtype == torch.float64 else 1)  # 32-bit words of the Mersenne Twister
    torch.empty(words // 2, dtype=torch.int64, device=device).random_()
    if words % 2:
        torch.empty(1, dtype=torch.int32, device=device).random_()
