"""Per-site measurements from hooks, handed back as plain Python floats.

Knows nothing of YAML or files. Inside `with Recorder(model) as rec:` a forward pre-hook on each
site's module measures that site's input x_l (and its parameters) and puts a *tensor* hook on it (cheaper than full
module backward hooks, and safe with in-place ops), which measures dloss/dx_l in the backward pass;
after `loss.backward()`, `rec.collect()` turns everything into floats in one device->host transfer.
Hooks are removed on exit, even on error.

Quantities (one small function each, or one fused norm call):
    input_grad_norm  ||dloss/dx_l||_2 over the whole batch, x_l the input of site l
    activation_rms   sqrt(mean(x_l^2))
    param_grad_norm  ||dloss/dtheta_l||_2 over the site's parameters (a shared parameter: its total grad)
    grad_norm / value_norm per named parameter
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from functools import partial

import torch

from resflow.models.stack import Site


@dataclass
class Record:
    """Plain floats: one entry per site (`sites`) and one per (site layer, parameter) (`params`)."""

    layer: list[int] = field(default_factory=list)
    sublayer: list[str] = field(default_factory=list)
    input_grad_norm: list[float] = field(default_factory=list)
    activation_rms: list[float] = field(default_factory=list)
    param_grad_norm: list[float] = field(default_factory=list)
    param_layer: list[int] = field(default_factory=list)
    param_name: list[str] = field(default_factory=list)
    param_grad: list[float] = field(default_factory=list)
    param_value: list[float] = field(default_factory=list)

    def add_rows(self, grads: dict[str, list], params: dict[str, list], variant: str, seed: int, step: int) -> None:
        """Append this record as rows of grads.csv and params.csv, kept as {column: values}."""
        n, m = len(self.layer), len(self.param_layer)
        for table, k, cols in (
            (grads, n, {"layer": self.layer, "sublayer": self.sublayer, "input_grad_norm": self.input_grad_norm,
                        "activation_rms": self.activation_rms, "param_grad_norm": self.param_grad_norm}),
            (params, m, {"layer": self.param_layer, "param": self.param_name, "grad_norm": self.param_grad,
                         "value_norm": self.param_value}),
        ):
            table.setdefault("variant", []).extend([variant] * k)
            table.setdefault("seed", []).extend([seed] * k)
            table.setdefault("step", []).extend([step] * k)
            for key, values in cols.items():
                table.setdefault(key, []).extend(values)


def activation_rms(norm: float, numel: int) -> float:
    """sqrt(mean(x^2)) from ||x|| and x's number of elements."""
    return norm / math.sqrt(numel) if numel else math.nan


def group_norm(norms: list[float]) -> float:
    """||concatenation of some tensors|| from their norms: sqrt(sum of squares), without overflow."""
    return math.hypot(*norms)


class Recorder:
    """Attach on enter, remove on exit; `collect()` after each backward, `reset()` before the next forward.

    Norms are taken where the tensors are hot in the cache, and nothing large is kept alive (which
    would change how the step's own memory is reused). In the forward pass, as site l is entered:
    ||x_l|| and the norms of the site's parameters, which its forward is about to read (so the norm's
    read doubles as a prefetch for it). In the backward pass, when dloss/dx_l arrives: its norm and
    those of the site's parameter gradients, which the site's backward has just written. Two small
    fused norm calls per site, and no other per-site work. `collect()` re-measures what changed
    since, or was not ready then: a parameter or gradient modified in place (its `_version` moved)
    or replaced, a gradient accumulated later (a shared weight's), a parameter outside every site (a
    final norm's). So the floats are those of the tensors as they are when `collect()` runs.
    (Changes made through `.data` bypass the version counter, as they bypass autograd.)
    """

    def __init__(self, model):
        self.sites: list[Site] = model.sites()
        # parameters outside every site (a transformer's final norm): params.csv rows only
        self.extra_params = list(model.extra_params()) if hasattr(model, "extra_params") else []
        self._handles = []  # module hooks
        self._tensor_handles = []  # tensor hooks: a leaf input outlives the step, so they are removed too
        # The parameters' layout is fixed for the model's life: worked out once, not per step.
        self._params: list[torch.Tensor] = []  # unique parameters, in first-seen order
        index_of: dict[int, int] = {}

        def index(p) -> int:  # p's place in _params, added when first seen
            i = index_of.setdefault(id(p), len(self._params))
            if i == len(self._params):
                self._params.append(p)
            return i

        self._groups = [[index(p) for _, p in site.params] for site in self.sites]  # per site, as params.csv lists them
        # (layer, name, index into _params) for each params.csv row
        self._param_rows = [(site.layer, name, index(p)) for site in self.sites for name, p in site.params]
        self._param_rows += [(layer, name, index(p)) for layer, name, p in self.extra_params]
        # per site call, its parameters (index, parameter), each once
        self._site_params = [tuple((i, self._params[i]) for i in dict.fromkeys(g)) for g in self._groups]
        self.reset()

    # -- hooks ------------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        seen = set()
        for site in self.sites:
            if id(site.module) in seen:  # shared weights: one hook, called once per layer
                continue
            seen.add(id(site.module))
            self._handles.append(site.module.register_forward_pre_hook(self._on_forward))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles + self._tensor_handles:
            handle.remove()
        self._handles.clear()
        self._tensor_handles.clear()

    def reset(self) -> None:
        n_params = len(self._params)
        self._input_norms: list[torch.Tensor] = []  # ||x_l||, one per site call
        self._numels: list[int] = []
        self._grad_norms: dict[int, torch.Tensor] = {}  # site -> ||dloss/dx_l||
        # per unique parameter: ||p|| and p._version when measured; ||p.grad||, a weak reference to
        # that p.grad (the recorder keeps no gradient alive) and its _version
        self._value_norms: list = [None] * n_params
        self._value_versions: list = [None] * n_params
        self._p_grad_norms: list = [None] * n_params
        self._p_grads: list = [None] * n_params
        self._p_grad_versions: list = [None] * n_params

    def _on_forward(self, module, args):
        x = args[0]
        index = len(self._input_norms)
        if index >= len(self._site_params):  # a second forward before collect(): collect() says so
            self._input_norms.append(x.new_zeros(()))
            self._numels.append(x.numel())
            return None
        todo = [(i, p) for i, p in self._site_params[index] if self._value_versions[i] is None]
        norms = torch._foreach_norm([x.detach(), *(p.detach() for _, p in todo)])
        self._input_norms.append(norms[0])
        self._numels.append(x.numel())
        for (i, p), norm in zip(todo, norms[1:]):
            self._value_norms[i] = norm
            self._value_versions[i] = p._version
        if x.requires_grad:
            self._tensor_handles.append(x.register_hook(partial(self._on_grad, index)))
        return None  # returning a value would replace the module's input

    def _on_grad(self, index: int, grad: torch.Tensor):
        # The site's backward has just written its parameters' gradients: measure those (the ones
        # accumulated by now and not measured yet) while they are in the cache.
        measured = self._p_grads
        todo = [(i, p.grad) for i, p in self._site_params[index] if measured[i] is None and p.grad is not None]
        norms = torch._foreach_norm([grad, *(g for _, g in todo)])
        self._grad_norms[index] = norms[0]
        for (i, g), norm in zip(todo, norms[1:]):
            self._p_grad_norms[i] = norm
            measured[i] = weakref.ref(g)
            self._p_grad_versions[i] = g._version
        return None

    # -- conversion to floats ---------------------------------------------------------------
    def _param_norms(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """||grad|| and ||value|| per unique parameter: those taken in the hooks if still current."""
        grad_norms, value_norms = list(self._p_grad_norms), list(self._value_norms)
        stale_grads, stale_values = [], []
        for i, (p, ref, grad_version, value_version) in enumerate(
            zip(self._params, self._p_grads, self._p_grad_versions, self._value_versions)
        ):
            g = p.grad
            if ref is None or g is None or ref() is not g or g._version != grad_version:
                stale_grads.append(i)
            if p._version != value_version:
                stale_values.append(i)
        params = self._params
        if stale_grads:
            tensors = [params[i].grad if params[i].grad is not None else torch.zeros_like(params[i]) for i in stale_grads]
            for i, norm in zip(stale_grads, torch._foreach_norm(tensors)):
                grad_norms[i] = norm
        if stale_values:
            for i, norm in zip(stale_values, torch._foreach_norm([params[i].detach() for i in stale_values])):
                value_norms[i] = norm
        return grad_norms, value_norms

    def collect(self) -> Record:
        n = len(self.sites)
        if len(self._input_norms) != n:
            raise RuntimeError(f"recorder saw {len(self._input_norms)} site calls, expected {n}: run one forward per collect")
        p_grad_norms, p_value_norms = self._param_norms()
        zero = self._input_norms[0].new_zeros(())  # a site whose input needed no gradient
        g_norms = [self._grad_norms.get(i, zero) for i in range(n)]
        # every norm is taken by now: one stack, one device->host transfer, then plain float arithmetic
        vals = torch.stack(g_norms + self._input_norms + p_grad_norms + p_value_norms).double().tolist()
        n_params = len(self._params)
        p_grad, p_value = vals[2 * n : 2 * n + n_params], vals[2 * n + n_params :]

        rec = Record()
        rec.layer = [s.layer for s in self.sites]
        rec.sublayer = [s.sublayer for s in self.sites]
        rec.input_grad_norm = vals[:n]
        rec.activation_rms = [activation_rms(norm, numel) for norm, numel in zip(vals[n : 2 * n], self._numels)]
        rec.param_grad_norm = [group_norm([p_grad[i] for i in group]) for group in self._groups]
        rec.param_layer = [layer for layer, _, _ in self._param_rows]
        rec.param_name = [name for _, name, _ in self._param_rows]
        rec.param_grad = [p_grad[i] for _, _, i in self._param_rows]
        rec.param_value = [p_value[i] for _, _, i in self._param_rows]
        return rec
