"""Training runs: the loop (loop.py) and the synthetic tasks it learns (tasks.py)."""
