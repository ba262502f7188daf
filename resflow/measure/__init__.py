"""Measurement of any `nn.Module`: devices and dtypes, input batches and losses, per-layer norms
recorded through hooks, and resflow's own stacks measured for many seeds in one batched pass.

Knows no YAML: it takes modules, tensors and plain values (a Config only as a duck-typed object).
"""
