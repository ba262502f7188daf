"""resflow._sys.allocator: with its settings, the memory a training step frees is reused by the next step
without page faults, even in a process whose allocator was told to give freed memory back (the
control: there the same steps fault every gradient's pages in again)."""

import os
import subprocess
import sys

import pytest

from resflow._sys.allocator import retain_freed_memory

PROBE = """
import resource, sys, torch
from resflow._sys.allocator import retain_freed_memory
tuned = retain_freed_memory() if sys.argv[1] == "tuned" else False
torch.set_num_threads(1)
layers = [torch.nn.Linear(256, 256) for _ in range(10)]  # 256 KiB weight gradients, freed every step
x = torch.randn(64, 256)
def step():
    for lin in layers:
        lin.weight.grad = lin.bias.grad = None  # zero_grad(set_to_none=True)
    h = x
    for lin in layers:
        h = torch.tanh(lin(h))
    h.square().sum().backward()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # warm up to a steady state
    step()
before = faults()
for _ in range(10):
    step()
print(tuned, faults() - before)
"""


# A process whose allocator gives freed memory straight back (what glibc's defaults do, in their own
# history-dependent way, to some of a step's gradients): every 256 KiB gradient is mmapped and
# unmapped again, so the control faults deterministically, and the settings must win over it.
RETURNING = {"MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}


def probe(mode: str, env: dict | None = None) -> tuple[bool, int]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    tuned, faults = res.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_steady_steps_reuse_freed_memory_without_page_faults():
    tuned, faults = probe("tuned", RETURNING)
    if not tuned:
        pytest.skip("not glibc: retain_freed_memory() is a no-op")
    control = probe("default", RETURNING)[1]
    assert control > 5000  # 10 steps x 10 layers x 64 pages of gradient, at least: ~13,500 seen here
    assert faults < 300, faults  # 0 to 49 seen here
    # and from glibc's own defaults (whose faults come and go: 0 to 3,900 over these 10 steps)
    assert probe("tuned")[1] < 300


def test_is_harmless_to_call_twice():
    first = retain_freed_memory()
    assert retain_freed_memory() == first
