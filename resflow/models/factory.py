"""Models built by a factory a config names. Errors are one line (ResflowError), naming the factory.

A config is data that travels (results dirs carry config.yaml, configs are mailed around), so naming a
factory never runs code the user did not choose. Three kinds, in `check`:

- `hf:<family>`: built in (resflow.models.hf: Hugging Face models from their config classes, random
  weights, nothing downloaded); always allowed.
- `module:callable` that an installed package registers under the entry-point group
  `resflow.factories` (e.g. `[project.entry-points."resflow.factories"] build = "mypkg.models:build"`):
  installing the package was the user's choice; allowed.
- any other `module:callable`: importing it runs its code, so only when the user opts in for that
  invocation: `--allow-code`, `allow_code=True` (resflow.run, run_sweep), or RESFLOW_ALLOW_CODE=1.
  Then a module in the current directory imports too (it is looked for there after sys.path).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from contextlib import contextmanager

from resflow._sys.code import check
from resflow.errors import ConfigError

# 'package.module:callable' (an attribute path after the colon); the config checks the same pattern
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def resolve(spec: str, allow_code: bool | None = None):
    """The callable `spec` names: 'pkg.mod:callable' (an attribute path after the colon), or 'hf:gpt2';
    refused unless allowed (`check`)."""
    if not isinstance(spec, str) or not FACTORY_PATTERN.match(spec):
        raise ConfigError(
            f"model.factory: expected 'package.module:callable' or a named factory ({', '.join(named())}), got {spec!r}"
        )
    check(spec, allow_code)
    module_name, _, attr = spec.partition(":")
    if module_name == "hf":
        from resflow.models import hf

        builder = hf.FACTORIES.get(attr)
        if builder is None:
            raise ConfigError(f"model.factory: no named factory {spec!r}; named factories: {', '.join(named())}")
        return builder
    try:
        with _current_dir_importable():
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"model.factory: cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    except Exception as err:  # the module's own code failed on import
        raise ConfigError(f"model.factory: importing {module_name!r} failed ({type(err).__name__}: {_first(err)})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model.factory: {module_name!r} has no {attr!r}") from None
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.factory: {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


@contextmanager
def _current_dir_importable():
    """The current directory on sys.path (last: a file there never shadows an installed package) for
    the block: a factory module beside the config imports, as under `python -m`; removed after."""
    here = os.getcwd()
    if here in sys.path or "" in sys.path:
        yield
        return
    sys.path.append(here)
    try:
        yield
    finally:
        if here in sys.path:
            sys.path.remove(here)


def build(spec: str, kwargs: dict | None, allow_code: bool | None = None):
    """factory(**kwargs): an nn.Module, or a ConfigError naming what the factory rejected.
    `allow_code`: the opt-in for an arbitrary module:callable (see `check`)."""
    from torch import nn

    factory = resolve(spec, allow_code)
    try:
        with _current_dir_importable():  # (a factory that imports its siblings when called)
            model = factory(**(kwargs or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs: {spec} rejected them ({type(err).__name__}: {_first(err)})") from None
    except SystemExit as err:  # the factory tried to end the process: refused, and said
        raise ConfigError(f"model.factory: {spec} called sys.exit({err.code!r}) instead of returning a model") from None
    except Exception as err:  # noqa: BLE001 - the factory's own failure: named as its, not resflow's
        raise ConfigError(
            f"model.factory: {spec} raised {type(err).__name__}: {_first(err)} (the error is in the factory)"
        ) from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def named() -> list[str]:
    from resflow.models import hf

    return [f"hf:{name}" for name in hf.FACTORIES]


def _first(err: BaseException) -> str:
    """The error's text on one line (a multi-line message, e.g. transformers' validation errors, joined)."""
    return " ".join(str(err).split())[:300]
