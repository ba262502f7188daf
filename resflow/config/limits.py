"""Bounds and data shapes shared by the schema, the block families, the memory check and the CLI's options
(kept free of heavy imports for start-up)."""

MAX_SEEDS = 1_000_000  # the most seeds one run takes (config's `seeds`, the CLI's --seeds: both check it)
# data.dataset -> (C, H, W), classes of its images (tests/test_conv.py holds it against the loaders)
IMAGES = {None: ((1, 8, 8), 10), "digits": ((1, 8, 8), 10)}
