"""resflow: measure the gradient that reaches each layer of a deep network.

    import resflow
    result = resflow.run(resflow.load_config("deep50"))
    result.grads  # one row per (seed, step, layer, sublayer)

Heavy imports (torch, pandas) happen on first use, so `resflow --help` stays instant.
"""

from typing import TYPE_CHECKING

from resflow._version import __version__

if TYPE_CHECKING:  # what mypy and IDEs see: the real signatures (at run time: imported on first use, below)
    from resflow.anymodel import record as record
    from resflow.anymodel import watch as watch
    from resflow.config.loading import load_config as load_config
    from resflow.errors import ConfigError as ConfigError
    from resflow.errors import ResflowError as ResflowError
    from resflow.experiment import run as run
    from resflow.results.files import read_run as read_run
    from resflow.results.files import write_run as write_run
    from resflow.results.tables import RunResult as RunResult

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


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'resflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
