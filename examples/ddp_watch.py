"""watch under DistributedDataParallel or FSDP2: the global batch's gradient flow, rank 0 writing.

PYTHONPATH=. torchrun --standalone --nproc_per_node 2 examples/ddp_watch.py [ddp|fsdp2] [--small]

(--small: the same; this example is already small.)
"""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import resflow

if "RANK" not in os.environ:  # started without torchrun: one process, a world of 1
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29531"))
dist.init_process_group("gloo")  # (CPU; "nccl" on GPUs)
rank, ranks = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)  # the same initial weights on every rank
model = nn.Sequential(nn.Linear(32, 32), *[nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(6)], nn.Linear(32, 4))
if "fsdp2" in sys.argv[1:]:
    from torch.distributed.fsdp import fully_shard

    for block in model[1:-1]:
        fully_shard(block)
    wrapped = fully_shard(model)
else:
    wrapped = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(1)  # the same global batches on every rank; each takes its slice
with resflow.watch(wrapped, every=5, out="results/ddp-watch", force=True) as w:
    for step in range(10):
        x, y = torch.randn(64, 32, generator=gen), torch.randint(4, (64,), generator=gen)
        xs, ys = x.chunk(ranks)[rank], y.chunk(ranks)[rank]
        loss = nn.functional.cross_entropy(wrapped(xs), ys)
        loss.backward()
        w.step(loss)
        opt.step()
        opt.zero_grad()
if w.is_writer:
    print(f"{ranks} ranks; results/ddp-watch meta ranks = {w.result().meta['ranks']}")
    print(w.grads[["step", "layer", "module", "input_grad_norm", "param_grad_norm"]].head(6).to_string(index=False))
dist.destroy_process_group()
