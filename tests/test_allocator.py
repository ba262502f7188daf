"""resflow.allocator: with its settings, the memory a training step frees is reused by the next step
without page faults; with glibc's defaults the same steps fault their pages in again (the control)."""

import subprocess
import sys

import pytest

from resflow.allocator import retain_freed_memory

PROBE = """
import resource, sys, torch
from resflow.allocator import retain_freed_memory
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


def probe(mode: str) -> tuple[bool, int]:
    res = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    tuned, faults = res.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_steady_steps_reuse_freed_memory_without_page_faults():
    runs = [probe("tuned") for _ in range(3)]
    if not runs[0][0]:
        pytest.skip("not glibc: retain_freed_memory() is a no-op")
    # The control. glibc's thresholds move with what was freed last, so a run now and then happens
    # not to fault (1 in 20 here); 1,400 to 3,900 faults over the 10 steps is typical.
    control = 0
    for _ in range(3):
        control = max(control, probe("default")[1])
        if control > 1000:
            break
    assert control > 1000
    assert sorted(f for _, f in runs)[1] < 300, runs  # the median of three: 0 to 112 seen here


def test_is_harmless_to_call_twice():
    first = retain_freed_memory()
    assert retain_freed_memory() == first
