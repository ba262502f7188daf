"""Process plumbing, the bottom layer: signals, locks, atomic files, worker pools, allocator settings.

Knows nothing of configs, models or results; the worker pool is handed its task as a function.
"""
