"""Per-site measurements from hooks, handed back as plain Python floats.

Knows nothing of YAML or files. Inside `with Recorder(model) as rec:` a forward pre-hook on each
site's module keeps that site's input x_l and puts a *tensor* hook on it (cheaper than full module
backward hooks, and safe with in-place ops); after `loss.backward()`, `rec.collect()` turns
everything into floats in one device->host transfer. Hooks are removed on exit, even on error.

Quantities (one small function each):
    input_grad_norm  ||dloss/dx_l||_2 over the whole batch, x_l the input of site l
    activation_rms   sqrt(mean(x_l^2))
    param_grad_norm  ||dloss/dtheta_l||_2 over the site's parameters (a shared parameter: its total grad)
    grad_norm / value_norm per named parameter
"""

from __future__ import annotations

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


def input_grad_norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch._foreach_norm(grads))


def activation_rms(norms: torch.Tensor, numels: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x^2)) from ||x|| (a vector of norms) and sqrt(numel) (a matching vector)."""
    return norms / numels


def group_norms(norms: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """||concat of a group's tensors|| from the per-tensor norms: sqrt(sum of squares).

    `groups` is a (n_groups, max_size) index matrix into `norms`, padded with len(norms), which
    points at an appended zero; so every group costs the same few vectorised ops.
    """
    padded = torch.cat([norms, norms.new_zeros((1, *norms.shape[1:]))])  # norms: (P,) or (P, S)
    return padded[groups].square().sum(dim=1).sqrt()


class Recorder:
    """Attach on enter, remove on exit; `collect()` after each backward, `reset()` before the next forward."""

    def __init__(self, model):
        self.sites: list[Site] = model.sites()
        # parameters outside every site (a transformer's final norm): params.csv rows only
        self.extra_params = list(model.extra_params()) if hasattr(model, "extra_params") else []
        self._handles = []
        # The parameters' layout is fixed for the model's life: worked out once, not per step.
        self._params: list[torch.Tensor] = []  # unique parameters, in first-seen order
        index_of: dict[int, int] = {}
        groups: list[list[int]] = []
        self._param_rows: list[tuple[int, str, int]] = []  # (layer, name, index into _params)
        for site in self.sites:
            group = []
            for name, p in site.params:
                if id(p) not in index_of:
                    index_of[id(p)] = len(self._params)
                    self._params.append(p)
                group.append(index_of[id(p)])
                self._param_rows.append((site.layer, name, index_of[id(p)]))
            groups.append(group)
        for layer, name, p in self.extra_params:
            if id(p) not in index_of:
                index_of[id(p)] = len(self._params)
                self._params.append(p)
            self._param_rows.append((layer, name, index_of[id(p)]))
        width = max((len(g) for g in groups), default=0)
        pad = len(self._params)  # index of the zero appended in group_norms
        self._groups = torch.tensor([g + [pad] * (width - len(g)) for g in groups], dtype=torch.long).reshape(len(groups), width)
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
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        self._inputs: list[torch.Tensor] = []
        self._grads: dict[int, torch.Tensor] = {}

    def _on_forward(self, module, args):
        x = args[0]
        index = len(self._inputs)
        self._inputs.append(x.detach())
        if x.requires_grad:
            x.register_hook(partial(self._on_grad, index))
        return None  # returning a value would replace the module's input

    def _on_grad(self, index: int, grad: torch.Tensor):
        self._grads[index] = grad
        return None

    # -- conversion to floats ---------------------------------------------------------------
    def collect(self) -> Record:
        n = len(self.sites)
        if len(self._inputs) != n:
            raise RuntimeError(f"recorder saw {len(self._inputs)} site calls, expected {n}: run one forward per collect")
        inputs = self._inputs
        grads = [self._grads[i] if i in self._grads else torch.zeros_like(inputs[i]) for i in range(n)]
        params = self._params
        p_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        p_grad_norms = list(torch._foreach_norm(p_grads)) if params else []
        p_value_norms = list(torch._foreach_norm([p.detach() for p in params])) if params else []

        # three fused norm calls, then a handful of vectorised ops, whatever the depth
        norms = torch.stack(input_grad_norms(grads) + input_grad_norms(inputs) + p_grad_norms + p_value_norms)
        root_numel = torch.tensor([x.numel() ** 0.5 for x in inputs], dtype=norms.dtype).to(norms.device)
        groups = self._groups.to(norms.device)
        per_site = torch.cat([norms[:n], activation_rms(norms[n : 2 * n], root_numel), group_norms(norms[2 * n : 2 * n + len(params)], groups)])
        per_param = norms[2 * n :]
        site_vals = per_site.double().tolist()  # the device->host transfers: two per step
        param_vals = per_param.double().tolist()

        rec = Record()
        rec.layer = [s.layer for s in self.sites]
        rec.sublayer = [s.sublayer for s in self.sites]
        rec.input_grad_norm = site_vals[:n]
        rec.activation_rms = site_vals[n : 2 * n]
        rec.param_grad_norm = site_vals[2 * n :]
        n_params = len(params)
        rec.param_layer = [layer for layer, _, _ in self._param_rows]
        rec.param_name = [name for _, name, _ in self._param_rows]
        rec.param_grad = [param_vals[i] for _, _, i in self._param_rows]
        rec.param_value = [param_vals[n_params + i] for _, _, i in self._param_rows]
        return rec
