"""Benchmarks for resflow's performance targets: `python -m benchmarks [--quick]`."""
