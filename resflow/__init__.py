"""resflow: measure the gradient that reaches each layer of a deep network.

    import resflow
    result = resflow.run(resflow.load_config("deep50"))
    result.grads  # one row per (seed, step, layer, sublayer)

Heavy imports (torch, pandas) happen on first use, so `resflow --help` stays instant.
"""

from resflow._version import __version__

# public name -> the module that defines it (imported on first use, PEP 562)
_API = {
    "load_config": "resflow.config.loading",
    "run": "resflow.experiment",
    "record": "resflow.anymodel",  # any nn.Module, one step
    "watch": "resflow.anymodel",  # any nn.Module, inside your own training loop
    "RunResult": "resflow.results.tables",
    "write_run": "resflow.results.files",
    "read_run": "resflow.results.files",
    "ResflowError": "resflow.errors",
    "ConfigError": "resflow.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'resflow' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
