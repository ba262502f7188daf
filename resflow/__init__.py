"""resflow: measure the gradient that reaches each layer of a deep network.

    from resflow import load_config, run
    result = run(load_config("deep50"))
    result.grads  # one row per (seed, step, layer, sublayer)

Heavy imports (torch, pandas) happen on first use, so `resflow --help` stays instant.
"""

__version__ = "0.1.0"
MAX_SEEDS = 1_000_000  # the most seeds one run takes (config's `seeds`, the CLI's --seeds: both check it)

__all__ = ["__version__", "load_config", "run", "ResflowError", "ConfigError"]


def __getattr__(name):  # lazy public API (PEP 562)
    if name == "load_config":
        from resflow.config import load_config

        return load_config
    if name == "run":
        from resflow.experiment import run

        return run
    if name in ("ResflowError", "ConfigError"):
        from resflow import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'resflow' has no attribute {name!r}")
