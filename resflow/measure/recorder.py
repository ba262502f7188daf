"""Per-site measurements from hooks, handed back as plain Python floats.

Knows nothing of YAML or files. Inside `with Recorder(model) as rec:` (or `Recorder(sites)`, any
model's modules: see `Recorder`) a forward pre-hook on each
site's module measures that site's input x_l (and its parameters) and puts a *tensor* hook on it (cheaper than full
module backward hooks, and safe with in-place ops), which measures dloss/dx_l in the backward pass;
after `loss.backward()`, `rec.collect()` turns everything into floats in one device->host transfer.
Hooks are removed on exit, even on error.

What is measured: the primitives of resflow.quantities.base (per site ||x_l||, its numel and
||dloss/dx_l||; per parameter ||theta|| and ||dloss/dtheta||, combined per site over its parameters),
in fused norm calls; the quantities (grads.csv / params.csv columns) are derived from those floats by
the registry (resflow.quantities), in `Record.add_rows`.

Norms are summed in the tensors' own dtype (fast). In float32 the squares of entries below ~1e-19
underflow and the sum of squares above ~3e38 overflows, so a norm below sqrt(numel·tiny/eps) or an
infinite one may be wrong (a finite gradient reported as 0 or inf; `inexact_norm`). Such a norm is
taken again with its squares summed in float64 (`exact_norms`): on the CPU in the hook itself, where
reading the norm is cheap; a parameter's in `collect()`. Elsewhere (CUDA, where reading it would
wait for the device) `collect()` marks the Record `norms_exact = False`, and the caller repeats the
step with `Recorder(model, exact=True)`, whose norms are all summed in float64.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field
from functools import partial

import torch

from resflow import quantities
from resflow.models.stack import Site


@dataclass
class Record:
    """Plain floats: the primitives (resflow.quantities.base) per site (`site`) and per (site layer,
    parameter) row (`param`); the quantities (grads.csv and params.csv columns) are derived from them
    by the registry (resflow.quantities) in `add_rows`."""

    layer: list[int] = field(default_factory=list)
    sublayer: list[str] = field(default_factory=list)
    site: dict[str, list] = field(default_factory=dict)  # primitive -> per site: input_grad, input, grad, value, ...
    param_layer: list[int] = field(default_factory=list)
    param_name: list[str] = field(default_factory=list)
    param: dict[str, list] = field(default_factory=dict)  # primitive -> per params row: grad, value, ...
    param_site: list[int] = field(default_factory=list)  # per params row, its site's index (-1: outside every site)
    norms_exact: bool = True  # False: a norm may have under/overflowed in the tensors' dtype (see the module doc)
    module: list[str] = field(default_factory=list)  # per site, its module's qualified name (any model's blocks)
    numel: list[int] = field(default_factory=list)  # per site, the entries of x_l its activation_rms is over
    # any model's blocks: the forwards (micro-batches) the step's rows combine; None: no `micro_batches` column
    micro_batches: int | None = None
    skip_missing: bool = False  # by_call: a parameter given no gradient (NaN) is left out of its block's norm

    # the original quantities, as attributes (read-only: derived from the primitives)
    @property
    def input_grad_norm(self) -> list[float]:
        return self.site.get("input_grad", [])

    @property
    def activation_rms(self) -> list[float]:
        return self.values("activation_rms")

    @property
    def param_grad_norm(self) -> list[float]:
        return self.site.get("grad", [])

    @property
    def param_grad(self) -> list[float]:
        return self.param.get("grad", [])

    @property
    def param_value(self) -> list[float]:
        return self.param.get("value", [])

    def site_primitives(self) -> dict[str, list]:
        return {**self.site, "numel": self.numel}

    def values(self, name: str, table: str = "grads") -> list[float]:
        """Quantity `name` of `table` per row (resflow.quantities), [] if its primitives were not measured."""
        q = (quantities.GRADS if table == "grads" else quantities.PARAMS)[name]
        return q.values(self.site_primitives() if table == "grads" else self.param) or []

    def set_param(self, name: str, per_row: list[float]) -> None:
        """Parameter primitive `name` per params row, and its per-site value (the block's parameters combined)."""
        self.param[name] = per_row
        self.site[name] = self.per_site(per_row)

    def per_site(self, per_row: list[float]) -> list[float]:
        """A parameter primitive combined over each site's parameters: sqrt(sum of squares) (`skip_missing`:
        of those not NaN, NaN if none)."""
        parts: list[list[float]] = [[] for _ in self.layer]
        for i, v in zip(self.param_site, per_row):
            if i >= 0:
                parts[i].append(v)
        if self.skip_missing:
            parts = [[v for v in p if not math.isnan(v)] for p in parts]
            return [group_norm(p) if p else math.nan for p in parts]
        return [group_norm(p) for p in parts]

    def scale_gradients(self, inputs: float, params: float) -> None:
        """Multiply the input-gradient norms by `inputs` and the parameter-gradient norms by `params`
        (a GradScaler's 1/scale; a data-parallel run's 1/ranks), in place."""
        if inputs != 1:
            self.site["input_grad"] = [v * inputs for v in self.site.get("input_grad", [])]
        if params != 1:
            self.site["grad"] = [v * params for v in self.site.get("grad", [])]
            self.param["grad"] = [v * params for v in self.param.get("grad", [])]

    def add_rows(self, grads: dict[str, list], params: dict[str, list], variant: str, seed: int, step: int) -> None:
        """Append this record as rows of grads.csv and params.csv, kept as {column: values}: the
        registry's quantities whose primitives were measured, in its order."""
        n, m = len(self.layer), len(self.param_layer)
        site_cols = {"layer": self.layer, "sublayer": self.sublayer}
        if any(self.module):
            site_cols["module"] = self.module
        extra = {} if self.micro_batches is None else {"micro_batches": [self.micro_batches] * n}
        param_cols = {}
        if any(self.module):  # each parameter's block (a parameter outside every block: ""), params.csv's last column
            param_cols["module"] = [self.module[layer] if layer < n else "" for layer in self.param_layer]
        per_param = quantities.derive("params", self.param)
        step_cols = {k: per_param.pop(k) for k in list(per_param) if quantities.PARAMS[k].opt_in}
        for table, k, cols in (
            (grads, n, {**site_cols, **quantities.derive("grads", self.site_primitives()), **extra}),
            (params, m, {"layer": self.param_layer, "param": self.param_name, **per_param, **param_cols, **step_cols}),
        ):
            table.setdefault("variant", []).extend([variant] * k)
            table.setdefault("seed", []).extend([seed] * k)
            table.setdefault("step", []).extend([step] * k)
            for key, values in cols.items():
                table.setdefault(key, []).extend(values)


LOW_PRECISION = (torch.float16, torch.bfloat16)  # norms of these are summed in float32 (autocast's dtypes)


def summed_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor's norm is summed in: its own, or float32 for float16/bfloat16 (whose 8 or 11
    bits of mantissa would round the sum of squares of any sizeable tensor)."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def fast_norms(tensors) -> list[torch.Tensor]:
    """||t|| of each tensor in one fused call, summed in its dtype; float16/bfloat16 ones (an autocast
    forward's activations and their gradients) in float32, as a float32 0-d tensor."""
    if not any(t.dtype in LOW_PRECISION for t in tensors):
        return torch._foreach_norm(tensors)
    low = [i for i, t in enumerate(tensors) if t.dtype in LOW_PRECISION]
    high = [i for i, t in enumerate(tensors) if t.dtype not in LOW_PRECISION]
    out: list = [None] * len(tensors)
    for at, norms in (
        (low, torch._foreach_norm([tensors[i] for i in low], dtype=torch.float32)),
        (high, torch._foreach_norm([tensors[i] for i in high]) if high else []),
    ):
        for i, norm in zip(at, norms):
            out[i] = norm
    return out


def in_backward() -> bool:
    """Whether autograd is running a backward pass in this thread: a block called now is being
    recomputed by activation checkpointing, not called by the model's forward."""
    return torch._C._current_graph_task_id() != -1


def inexact_norm(norm: float, numel: int, dtype: torch.dtype) -> bool:
    """True if ||x|| of `numel` entries summed in `dtype` may be wrong and float64 sums would do better:
    squares below the smallest normal number lost (the norm reads too small: anything under
    sqrt(numel·tiny/eps), where that loss could exceed `dtype`'s rounding) or a sum of squares that
    overflowed (inf). Never for float64 itself, whose sums are those float64 sums (its own limits,
    entries below ~1e-154 or above ~1e154, are not handled)."""
    dtype = summed_dtype(dtype)
    if dtype == torch.float64 or (FAST_OK <= norm < math.inf):
        return False
    return norm == math.inf or norm < norm_floor(numel, dtype)


def inexact_norms(norms: torch.Tensor, numels: list[int], dtype: torch.dtype) -> torch.Tensor:
    """`inexact_norm` of many norms at once: `norms` (..., n) float64 on the CPU, the last dimension
    norms of tensors of `numels[j]` entries summed in `dtype`; a bool tensor of the same shape."""
    if summed_dtype(dtype) == torch.float64:
        return torch.zeros(norms.shape, dtype=torch.bool)
    floors = torch.tensor([norm_floor(n, dtype) for n in numels], dtype=torch.float64)
    return (norms < floors) | (norms == math.inf)


FAST_OK = 1e-9  # above every norm_floor of a tensor under 1e12 entries: no need to work the floor out


def norm_floor(numel: int, dtype: torch.dtype) -> float:
    """sqrt(numel·tiny/eps): below it, ||x|| of `numel` entries summed in `dtype` may be too small."""
    return math.sqrt(numel * _tiny_over_eps(dtype))


@functools.cache
def _tiny_over_eps(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.tiny / info.eps


def reads_cheaply(tensor: torch.Tensor) -> bool:
    """Whether reading a value of `tensor` in a hook is cheap (the CPU: no device to wait for)."""
    return tensor.is_cpu


def _checked(norm: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor | float:
    """`norm` (of `tensor`, just taken in its dtype), or on the CPU, if it may be wrong, the norm again
    summed in float64 (the tensor is still here), as a Python float: kept out of `collect()`'s one
    stack, which would otherwise mix dtypes (several times slower)."""
    if not reads_cheaply(tensor):
        return norm
    v = norm.item()
    if not inexact_norm(v, tensor.numel(), tensor.dtype):
        return norm
    if v == 0 and not tensor.any():  # truly zero (as deep float32 stacks' gradients become): nothing to sum again
        return norm
    return exact_norms([tensor])[0].item()


EXACT_PIECE = 1 << 16  # entries summed in float64 at a time by exact_norms (a 512 KiB copy)


def exact_norms(tensors) -> list[torch.Tensor]:
    """||t|| of each tensor (0-d float64), its squares summed in float64, a piece at a time: torch's
    own float64 norm of a float32 tensor first copies all of it to float64 (twice its memory). The
    small ones in one fused call."""
    flats = [t.detach().reshape(-1) for t in tensors]
    out: list = [None] * len(flats)
    batch, size = [], 0  # small tensors, measured together up to EXACT_PIECE entries (the fused call copies them all)
    for i, flat in enumerate(flats + [None]):
        if batch and (flat is None or size + flat.numel() > EXACT_PIECE):
            for j, norm in zip(batch, torch._foreach_norm([flats[j] for j in batch], dtype=torch.float64)):
                out[j] = norm
            batch, size = [], 0
        if flat is not None and flat.numel() <= EXACT_PIECE:
            batch.append(i)
            size += flat.numel()
    for i, flat in enumerate(flats):
        if out[i] is None:
            pieces = torch._foreach_norm(list(flat.split(EXACT_PIECE)), dtype=torch.float64)
            out[i] = torch.linalg.vector_norm(torch.stack(pieces))
    return out


def remeasure_inexact(values: list[float], tensors: list[torch.Tensor]) -> list[float]:
    """`values` (the norms of `tensors`, summed in their dtypes), with those that may have under- or
    overflowed (inexact_norm) taken again in float64; in place, and returned."""
    if plainly_exact(values):
        return values
    redo = [i for i, (v, t) in enumerate(zip(values, tensors)) if inexact_norm(v, t.numel(), t.dtype)]
    if redo:
        for i, v in zip(redo, torch.stack(exact_norms([tensors[i] for i in redo])).tolist()):
            values[i] = v
    return values


def plainly_exact(values: list[float]) -> bool:
    """Every norm in `values` finite and above FAST_OK (nearly always): none to look at more closely."""
    return not values or (FAST_OK <= min(values) and max(values) < math.inf)


def norms_as_floats(tensors: list[torch.Tensor]) -> list[float]:
    """||t|| of each tensor as a float: summed in the tensor's dtype (fast), and again in float64 where
    that may have under/overflowed (inexact_norm)."""
    if not tensors:
        return []
    return remeasure_inexact(torch.stack([n.double() for n in fast_norms(tensors)]).tolist(), tensors)


def _as_floats(norms: list) -> list[float]:
    """0-d norm tensors (and the Python floats of re-measured norms) as floats: the tensors in one
    stack and one transfer."""
    at = [i for i, v in enumerate(norms) if not isinstance(v, float)]
    if len(at) == len(norms):
        return torch.stack(norms).double().tolist()
    out = list(norms)
    if at:
        for i, v in zip(at, torch.stack([norms[i] for i in at]).double().tolist()):
            out[i] = v
    return out


def group_norm(norms: list[float]) -> float:
    """||concatenation of some tensors|| from their norms: sqrt(sum of squares), without overflow."""
    return math.hypot(*norms)


class Recorder:
    """Attach on enter, remove on exit; `collect()` after each backward, `reset()` before the next forward.

    `Recorder(model)` takes resflow's own model's `model.sites()`; `Recorder(sites)` any list of
    Sites. With `by_call=True` (any model's blocks: resflow.measure.blocks) each Site is a template, one per
    module, and the sites are found in the forwards the step runs (see "Calls" below); the input x
    is the first floating tensor argument or the `hidden_states` keyword argument (Hugging Face
    blocks), and a site that received no gradient (its input did not require one) reads NaN, not 0.
    `extra_params`: parameters outside every site, (name, parameter), recorded in params.csv at
    layer = the number of sites. `root`: the model whose call starts a forward (a micro-batch).
    `local`: maps a parameter or its gradient to the tensor whose norm is taken (an FSDP2 shard).
    `params_in_hooks=False` (implied by `local`): parameters measured in `collect()` only, not in
    the hooks (where a later in-place change that moves no version counter, GradScaler's unscale_,
    would go unseen).

    Calls (by_call). A forward is the calls of blocks between two calls of `root` (without a root:
    between two backward passes). Site = (block, k-th call of it in one forward): `layer` is its
    index in order of first appearance, so each block is one site, and a block called twice in one
    forward (shared weights) two. The step's forwards (gradient accumulation: micro-batches) are
    combined per site: ||dloss/dx|| = sqrt(sum over forwards of its squares) (the norm over the
    concatenated batch, as the user scaled each loss) and activation_rms = sqrt(sum ||x||^2 / sum
    numel) (the rms over the concatenated batch); `micro_batches` counts the forwards. A call made
    while a backward runs is activation checkpointing's recompute: never a new site. A call made
    with gradients disabled is kept only if a recompute of it follows (a reentrant checkpoint runs
    the forward under no_grad and takes the gradient in the recompute, where its hook goes); else
    (an eval forward) it is dropped.

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

    def __init__(
        self, model, exact: bool = False, *, extra_params=None, by_call: bool = False, root=None, local=None, params_in_hooks=True
    ):
        self.exact = exact  # every norm summed in float64 (see the module doc)
        self._foreach_norm = exact_norms if exact else fast_norms
        self.by_call = by_call
        self._root = root
        self._local = local
        self._params_in_hooks = params_in_hooks and local is None
        if hasattr(model, "sites"):
            self.sites: list[Site] = model.sites()
            # parameters outside every site (a transformer's final norm): params.csv rows only
            self.extra_params = list(model.extra_params()) if hasattr(model, "extra_params") else []
        else:  # a list of Sites
            self.sites = list(model)
            self.extra_params = [(len(self.sites), name, p) for name, p in (extra_params or ())]  # (by_call: per forward)
        self._templates = self.sites  # by_call: one per module; the call order is seen in each forward
        self._template_of = {id(site.module): t for t, site in enumerate(self.sites)}
        self._site_keys = None  # by_call: the last step's sites, (template, call of it in a forward)
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
        self._missing = math.nan if by_call else 0.0  # a site given no gradient (resflow's own inputs always need one)
        self.reset()

    # -- hooks ------------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        seen = set()
        for site in self._templates:
            if id(site.module) in seen:  # shared weights: one hook, called once per layer
                continue
            seen.add(id(site.module))
            if self.by_call:
                self._handles.append(site.module.register_forward_pre_hook(self._on_call, with_kwargs=True))
            else:
                self._handles.append(site.module.register_forward_pre_hook(self._on_forward))
        if self.by_call and self._root is not None:
            self._handles.append(self._root.register_forward_pre_hook(self._on_root))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles + self._tensor_handles:
            handle.remove()
        self._handles.clear()
        self._tensor_handles.clear()

    def rearm(self) -> None:
        """Ready for the next step with the module hooks kept (a loop recording step after step):
        the tensor hooks of the step just collected removed (a leaf input may outlive it), then reset."""
        for handle in self._tensor_handles:
            handle.remove()
        self._tensor_handles.clear()
        self.reset()

    def reset(self) -> None:
        n_params = len(self._params)
        self._input_norms: list[torch.Tensor] = []  # ||x_l||, one per site call
        self._numels: list[int] = []
        self._x_dtype, self._x_on_cpu = None, True  # the sites' inputs' dtype and device, once seen
        self._grad_norms: dict[int, torch.Tensor] = {}  # site -> ||dloss/dx_l||
        # per unique parameter: ||p|| and p._version when measured; ||p.grad||, a weak reference to
        # that p.grad (the recorder keeps no gradient alive) and its _version
        self._value_norms: list = [None] * n_params
        self._value_versions: list = [None] * n_params
        self._p_grad_norms: list = [None] * n_params
        self._p_grads: list = [None] * n_params
        self._p_grad_versions: list = [None] * n_params
        # by_call: per call, its template and forward; calls made without gradients not recomputed yet
        self._call_template: list[int] = []
        self._call_pass: list[int] = []
        self._open: list[int] = []
        self._pass = 0  # the current forward
        self._new_pass = False  # the root was called: the next block call starts a forward
        self._root_seen = False
        self._grad_seen = False  # a gradient arrived since the last block call (no root: a new forward)

    @property
    def params(self) -> list[torch.Tensor]:
        """The parameters recorded, each once, in first-seen order (for per-parameter state a caller
        keeps, e.g. training's copy before the optimizer step)."""
        return list(self._params)

    @property
    def param_rows(self) -> list[int]:
        """For each params.csv row of a Record, the index of its parameter in `params`."""
        return [i for _, _, i in self._param_rows]

    @property
    def calls_seen(self) -> int:
        """Block calls seen since the last reset (by_call)."""
        return len(self._call_template)

    def _on_root(self, module, args):
        if not in_backward():  # (a checkpointed whole model is recomputed in backward)
            self._new_pass = self._root_seen = True

    def _on_call(self, module, args, kwargs):
        """by_call: this call of `module` is the next call of the step (see the class doc, Calls)."""
        template = self._template_of.get(id(module))
        if template is None:  # a deepcopy's hook
            return None
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is None:
            x = kwargs.get("hidden_states")
        if in_backward():
            self._recompute(template, x)
            return None
        if self._new_pass or (self._grad_seen and not self._root_seen):
            if self._call_pass and self._call_pass[-1] == self._pass:
                self._pass += 1
            self._new_pass = self._grad_seen = False
        index = len(self._input_norms)
        self._call_template.append(template)
        self._call_pass.append(self._pass)
        grad = torch.is_grad_enabled()
        if not grad:  # an eval forward, or a reentrant checkpoint's forward: kept if recomputed
            self._open.append(index)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():  # no measurable input
            self._input_norms.append(math.nan)  # (a float: collect() stacks only the tensors)
            self._numels.append(0)
            self._measure_params(template)
            return None
        self._measure(x, index, template, hook=grad)
        return None

    def _recompute(self, template: int, x) -> None:
        """A call of block `template` inside a backward (checkpointing's recompute). The latest call
        of it made without gradients (a reentrant checkpoint's forward) takes its gradient here, from
        the recomputed input; any other recompute adds nothing (the forward's hook is in place)."""
        for k in range(len(self._open) - 1, -1, -1):
            index = self._open[k]
            if self._call_template[index] == template:
                del self._open[k]
                if isinstance(x, torch.Tensor) and x.requires_grad:
                    self._tensor_handles.append(x.register_hook(partial(self._on_grad, index, template)))
                return

    def _on_forward(self, module, args):
        x = args[0]
        index = len(self._input_norms)
        if index >= len(self._site_params):  # a second forward before collect(): collect() says so
            self._input_norms.append(x.new_zeros((), dtype=torch.float64 if self.exact else x.dtype))
            self._numels.append(x.numel())
            return None
        self._measure(x, index, index)
        return None

    def _measure_params(self, group: int) -> None:
        if not self._params_in_hooks:
            return
        todo = [(i, p) for i, p in self._site_params[group] if self._value_versions[i] is None]
        if todo:
            for (i, p), norm in zip(todo, self._foreach_norm([p.detach() for _, p in todo])):
                self._value_norms[i] = norm
                self._value_versions[i] = p._version

    def _measure(self, x: torch.Tensor, index: int, group: int, hook: bool = True) -> None:
        """Site `index`'s input x (and its parameters, `_site_params[group]`): norms, and (`hook`) a hook for dloss/dx."""
        todo = [(i, p) for i, p in self._site_params[group] if self._value_versions[i] is None]
        if not self._params_in_hooks:
            todo = []
        norms = self._foreach_norm([x.detach(), *(p.detach() for _, p in todo)])
        self._x_dtype, self._x_on_cpu = x.dtype, reads_cheaply(x)
        self._input_norms.append(norms[0] if self.exact else _checked(norms[0], x.detach()))
        self._numels.append(x.numel())
        for (i, p), norm in zip(todo, norms[1:]):
            self._value_norms[i] = norm
            self._value_versions[i] = p._version
        if hook and x.requires_grad:
            self._tensor_handles.append(x.register_hook(partial(self._on_grad, index, group)))
        # (a hook returning a value would replace the module's input: these return None)

    def _on_grad(self, index: int, group: int, grad: torch.Tensor):
        # The site's backward has just written its parameters' gradients: measure those (the ones
        # accumulated by now and not measured yet) while they are in the cache.
        self._grad_seen = True
        if index in self._grad_norms:  # (a reentrant checkpoint's input: its hooks in and out of the recompute)
            return None
        measured = self._p_grads
        todo = [(i, p.grad) for i, p in self._site_params[group] if measured[i] is None and p.grad is not None]
        if not self._params_in_hooks:
            todo = []
        norms = self._foreach_norm([grad, *(g for _, g in todo)])
        self._grad_norms[index] = norms[0] if self.exact else _checked(norms[0], grad)
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
        local = self._local or (lambda t: t)
        if stale_grads:
            tensors = [local(params[i].grad if params[i].grad is not None else torch.zeros_like(params[i])) for i in stale_grads]
            for i, norm in zip(stale_grads, self._foreach_norm(tensors)):
                grad_norms[i] = norm
            if self.by_call:  # a parameter that got no gradient (frozen, or off the loss's path): NaN, not 0
                for i in stale_grads:
                    if params[i].grad is None:
                        grad_norms[i] = math.nan
        if stale_values:
            for i, norm in zip(stale_values, self._foreach_norm([local(params[i].detach()) for i in stale_values])):
                value_norms[i] = norm
        return grad_norms, value_norms

    def _set_sites(self, keys: list[tuple[int, int]]) -> None:
        """by_call: the step's sites, one per (template, k-th call in a forward), `layer` its index;
        params.csv rows to match (worked out again only when they differ from the last step's)."""
        if keys == self._site_keys:
            return
        self._site_keys = keys
        self.sites = [self._templates[t]._replace(layer=i) for i, (t, _) in enumerate(keys)]
        index_of = {id(p): i for i, p in enumerate(self._params)}
        self._groups = [[index_of[id(p)] for _, p in site.params] for site in self.sites]
        self._param_rows = [(site.layer, name, index_of[id(p)]) for site in self.sites for name, p in site.params]
        self._param_rows += [(len(self.sites), name, index_of[id(p)]) for _, name, p in self.extra_params]

    def collect(self) -> Record:
        if self.by_call:
            return self._collect_calls()
        n = len(self.sites)
        if len(self._input_norms) != n:
            raise RuntimeError(f"recorder saw {len(self._input_norms)} site calls, expected {n}: run one forward per collect")
        p_grad_norms, p_value_norms = self._param_norms()
        if n == 0 and not p_grad_norms:
            return Record()
        g_norms = [self._grad_norms.get(i, self._missing) for i in range(n)]  # a site whose input needed no gradient: 0.0
        # every norm is taken by now: one stack, one device->host transfer, then plain float arithmetic
        vals = _as_floats(g_norms + self._input_norms + p_grad_norms + p_value_norms)
        n_params = len(self._params)
        p_grad, p_value = vals[2 * n : 2 * n + n_params], vals[2 * n + n_params :]
        grads = [(vals[i], self._numels[i]) for i in self._grad_norms]
        exact = self.exact or self._check_norms(grads, list(zip(vals[n : 2 * n], self._numels)), p_grad, p_value)
        rec = self._record(p_grad, p_value, exact)
        rec.site["input_grad"] = vals[:n]
        rec.site["input"] = vals[n : 2 * n]
        rec.numel = list(self._numels)
        return rec

    def _collect_calls(self) -> Record:
        """by_call: the step's calls as one row per site, its forwards combined (class doc, Calls)."""
        dropped = set(self._open)  # made without gradients and never recomputed: an eval forward's
        kept = [c for c in range(len(self._call_template)) if c not in dropped]
        if not kept:
            return Record()
        nth: dict[tuple[int, int], int] = {}  # (forward, template) -> calls of it so far
        keys = []
        for c in kept:
            at = (self._call_pass[c], self._call_template[c])
            keys.append((self._call_template[c], nth.get(at, 0)))
            nth[at] = nth.get(at, 0) + 1
        site_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        self._set_sites(list(site_of))
        p_grad_norms, p_value_norms = self._param_norms()
        m = len(kept)
        g_norms = [self._grad_norms.get(c, math.nan) for c in kept]  # no gradient reached that call's input: NaN
        vals = _as_floats(g_norms + [self._input_norms[c] for c in kept] + p_grad_norms + p_value_norms)
        n_params = len(self._params)
        p_grad, p_value = vals[2 * m : 2 * m + n_params], vals[2 * m + n_params :]
        numels = [self._numels[c] for c in kept]
        grads = [(v, k) for v, k in zip(vals[:m], numels) if not math.isnan(v)]
        exact = self.exact or self._check_norms(grads, list(zip(vals[m : 2 * m], numels)), p_grad, p_value)
        n = len(site_of)
        g_parts: list[list[float]] = [[] for _ in range(n)]
        x_parts: list[list[float]] = [[] for _ in range(n)]
        sizes = [0] * n
        for key, g, x, numel in zip(keys, vals[:m], vals[m : 2 * m], numels):
            i = site_of[key]
            if not math.isnan(g):
                g_parts[i].append(g)
            if numel:
                x_parts[i].append(x)
                sizes[i] += numel
        rec = self._record(p_grad, p_value, exact)
        rec.site["input_grad"] = [group_norm(parts) if parts else math.nan for parts in g_parts]
        rec.site["input"] = [group_norm(parts) for parts in x_parts]
        rec.numel = sizes
        rec.micro_batches = len({self._call_pass[c] for c in kept})
        return rec

    def _record(self, p_grad: list[float], p_value: list[float], exact: bool) -> Record:
        """A Record of the sites and parameter rows (the input primitives are the caller's)."""
        rec = Record()
        rec.layer = [s.layer for s in self.sites]
        rec.sublayer = [s.sublayer for s in self.sites]
        rec.param_layer = [layer for layer, _, _ in self._param_rows]
        rec.param_name = [name for _, name, _ in self._param_rows]
        rec.param_site = self._row_site
        rec.skip_missing = self.by_call
        rec.set_param("grad", [p_grad[i] for _, _, i in self._param_rows])
        rec.set_param("value", [p_value[i] for _, _, i in self._param_rows])
        rec.norms_exact = exact
        rec.module = [getattr(s, "name", "") for s in self.sites]
        return rec

    @property
    def _row_site(self) -> list[int]:
        """Per params.csv row, its site's index (-1: a parameter outside every site)."""
        return [i for i, site in enumerate(self.sites) for _ in site.params] + [-1] * (
            len(self._param_rows) - sum(len(site.params) for site in self.sites)
        )

    def _check_norms(self, grads: list[tuple], xs: list[tuple], p_grad: list[float], p_value: list[float]) -> bool:
        """Re-measure in float64, in place, the parameter norms that may have under/overflowed (their
        tensors are still here); False if a site's norm may have (its tensors are gone). `grads`, `xs`:
        (norm, numel) of the sites' input gradients and inputs."""
        local = self._local or (lambda t: t)
        for values, tensor_of in (
            (p_grad, lambda p: None if p.grad is None else local(p.grad)),
            (p_value, lambda p: local(p.detach())),
        ):
            if plainly_exact(values):
                continue
            tensors = [tensor_of(p) for p in self._params]
            present = [i for i, t in enumerate(tensors) if t is not None]  # (a parameter given no gradient: 0, exactly)
            for i, norm in zip(present, remeasure_inexact([values[i] for i in present], [tensors[i] for i in present])):
                values[i] = norm
        dtype = self._x_dtype
        if dtype is None or self._x_on_cpu:  # (on the CPU the hooks took any such norm again already)
            return True
        return not any(inexact_norm(v, numel, dtype) for v, numel in [*grads, *xs])
