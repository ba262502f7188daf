"""Data-parallel runs (torch.distributed): which wrapper holds the model, and a step's Record
reduced over the ranks into the global batch's.

Under DistributedDataParallel or FSDP2 (`torch.distributed.fsdp.fully_shard`) each rank runs its own
slice of the global batch. The gradient reaching a block's input is then the concatenation of the
ranks' input gradients, each of the rank's own loss; both wrappers average the parameter gradients
over the ranks, which is the gradient of the mean of the ranks' losses. So the global step's
||dloss/dx|| is sqrt(sum over ranks of ||dloss_r/dx_r||^2) / ranks (the number a single process
computes on the concatenated batch with the ranks' losses averaged), ||x|| and numel are over all
ranks' entries, and a parameter's gradient norm is that of its full, averaged gradient: DDP's
`.grad` already is; an FSDP2 parameter's is sqrt(sum over ranks of its shard's squares), summed
without gathering the shards. One all_reduce of one float64 tensor per recorded step.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from resflow.errors import ResflowError


def initialized() -> bool:
    """Whether a default process group exists (torch.distributed.init_process_group was called)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return torch.distributed.get_world_size() if initialized() else 1


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return not initialized() or torch.distributed.get_rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module that holds the blocks, inside torch.compile's OptimizedModule and
    DistributedDataParallel (their own names, `_orig_mod.`/`module.`, are not the model's)."""
    while True:
        if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _local(t: torch.Tensor) -> torch.Tensor:
    """An FSDP2 parameter's (or gradient's) shard on this rank; any other tensor as it is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


class DataParallel:
    """How a data-parallel model's step is measured: `local` (the tensor whose norm a parameter's
    is summed from) and `reduce` (a Record over the ranks, in place)."""

    def __init__(self, kind: str, ranks: int):
        self.kind, self.ranks = kind, ranks  # kind: "ddp" or "fsdp2"
        self.local = _local if kind == "fsdp2" else None

    def reduce(self, rec) -> None:
        """The ranks' Records (the same sites, each of its own batch slice) as the global step's: the
        primitives (resflow.quantities.base) summed over the ranks as squares, in one all_reduce."""
        n, sharded = len(rec.layer), self.kind == "fsdp2"
        parts = [g * g for g in rec.site.get("input_grad", [])]
        parts += [(x * x if k else 0.0) for x, k in zip(rec.site.get("input", []), rec.numel)]
        parts += [float(k) for k in rec.numel]
        per_param = list(rec.param) if sharded else []  # an FSDP2 parameter's norms: of this rank's shard
        for name in per_param:
            parts += [v * v for v in rec.param[name]]
        device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in str(torch.distributed.get_backend()) else None
        summed = torch.tensor(parts, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(summed)
        vals = summed.tolist()
        rec.site["input_grad"] = [math.sqrt(v) / self.ranks for v in vals[:n]]
        rec.site["input"] = [math.sqrt(v) for v in vals[n : 2 * n]]
        rec.numel = [int(k) for k in vals[2 * n : 3 * n]]
        at, m = 3 * n, len(rec.param_layer)
        for name in per_param:
            rec.set_param(name, [math.sqrt(v) for v in vals[at : at + m]])
            at += m


def _fsdp():
    """torch.distributed.fsdp if it was imported (no model can be wrapped by it otherwise; importing
    it takes seconds), else None."""
    return sys.modules.get("torch.distributed.fsdp")


def data_parallel(model: nn.Module, doing: str = "watch") -> DataParallel | None:
    """The DataParallel for `model`, or None in a single process. A one-line ResflowError for what
    is not supported: FSDP1, DeepSpeed, HSDP (replicated shards), and a process group of several
    ranks whose model is not wrapped (each rank would record its own slice as if it were the batch)."""
    modules = list(model.modules())
    if any(c.__module__.startswith("deepspeed") for m in modules for c in type(m).__mro__):
        raise ResflowError(f"{doing}: DeepSpeed engines are not supported; use DistributedDataParallel or FSDP2 (fully_shard)")
    fsdp = _fsdp()
    if fsdp is not None and any(isinstance(m, fsdp.FullyShardedDataParallel) for m in modules):
        raise ResflowError(
            f"{doing}: FSDP1 (FullyShardedDataParallel) is not supported; shard with FSDP2, "
            "torch.distributed.fsdp.fully_shard, or use DistributedDataParallel"
        )
    ranks = world_size()
    outer = model
    while type(outer).__name__ == "OptimizedModule":
        outer = outer._orig_mod
    if isinstance(outer, nn.parallel.DistributedDataParallel):
        return DataParallel("ddp", ranks)
    if fsdp is not None and any(isinstance(m, fsdp.FSDPModule) for m in modules):
        for name, p in model.named_parameters():
            placements = getattr(p, "placements", ())
            if any(not pl.is_shard() for pl in placements):
                raise ResflowError(
                    f"{doing}: parameter {name!r} is replicated across ranks ({placements}: HSDP); "
                    "only FSDP2 with fully sharded parameters is supported"
                )
        return DataParallel("fsdp2", ranks)
    if ranks > 1:
        raise ResflowError(
            f"{doing}: torch.distributed is initialised with {ranks} ranks but {type(model).__name__} is not "
            "wrapped in DistributedDataParallel or fully_shard (FSDP2): each rank would record only its own "
            "slice of the batch; wrap the model, or watch it in a single process"
        )
    return None
