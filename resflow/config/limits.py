"""Bounds shared by the schema and the CLI's options (kept free of heavy imports for start-up)."""

MAX_SEEDS = 1_000_000  # the most seeds one run takes (config's `seeds`, the CLI's --seeds: both check it)
