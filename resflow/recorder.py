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


def activation_rms(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [n / (x.numel() ** 0.5) for n, x in zip(torch._foreach_norm(inputs), inputs)]


def group_norms(norms: list[torch.Tensor], groups: list[list[int]]) -> list[torch.Tensor]:
    """||concat of a group's tensors|| from the per-tensor norms: sqrt(sum of squares)."""
    zero = norms[0].new_zeros(()) if norms else torch.zeros(())
    return [torch.stack([norms[i] for i in g]).square().sum().sqrt() if g else zero for g in groups]


class Recorder:
    """Attach on enter, remove on exit; `collect()` after each backward, `reset()` before the next forward."""

    def __init__(self, model):
        self.sites: list[Site] = model.sites()
        # parameters outside every site (a transformer's final norm): params.csv rows only
        self.extra_params = list(model.extra_params()) if hasattr(model, "extra_params") else []
        self._handles = []
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
        grads = [self._grads.get(i, torch.zeros_like(inputs[i])) for i in range(n)]

        params: list[torch.Tensor] = []  # unique parameters, in first-seen order
        index_of: dict[int, int] = {}
        site_groups: list[list[int]] = []
        for site in self.sites:
            group = []
            for _, p in site.params:
                if id(p) not in index_of:
                    index_of[id(p)] = len(params)
                    params.append(p)
                group.append(index_of[id(p)])
            site_groups.append(group)
        for _, _, p in self.extra_params:
            if id(p) not in index_of:
                index_of[id(p)] = len(params)
                params.append(p)
        p_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        p_grad_norms = list(torch._foreach_norm(p_grads)) if params else []
        p_value_norms = list(torch._foreach_norm([p.detach() for p in params])) if params else []

        per_site = torch.stack(
            input_grad_norms(grads) + activation_rms(inputs) + group_norms(p_grad_norms, site_groups)
        )
        per_param = torch.stack(p_grad_norms + p_value_norms) if params else per_site.new_zeros(0)
        site_vals = per_site.double().tolist()  # the one device->host transfer per step
        param_vals = per_param.double().tolist()

        rec = Record()
        rec.layer = [s.layer for s in self.sites]
        rec.sublayer = [s.sublayer for s in self.sites]
        rec.input_grad_norm = site_vals[:n]
        rec.activation_rms = site_vals[n : 2 * n]
        rec.param_grad_norm = site_vals[2 * n :]
        n_params = len(params)
        for site in self.sites:
            for name, p in site.params:
                i = index_of[id(p)]
                rec.param_layer.append(site.layer)
                rec.param_name.append(name)
                rec.param_grad.append(param_vals[i])
                rec.param_value.append(param_vals[n_params + i])
        for layer, name, p in self.extra_params:
            i = index_of[id(p)]
            rec.param_layer.append(layer)
            rec.param_name.append(name)
            rec.param_grad.append(param_vals[i])
            rec.param_value.append(param_vals[n_params + i])
        return rec
