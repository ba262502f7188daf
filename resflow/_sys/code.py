"""Which code a config may run: the trust decision for `model.factory` (resflow.models.factory).

Here, below every layer and without torch, so the CLI and a sweep's driver (whose points may run on
Ray or Slurm, never importing torch here) decide before anything is imported: `check(spec,
allow_code)` refuses in one line a `module:callable` the user did not opt in to. The rules are in
resflow.models.factory's docstring and docs/guarantees.md.
"""

from __future__ import annotations

import os

from resflow.errors import ConfigError

ALLOW_CODE_ENV = "RESFLOW_ALLOW_CODE"  # =1: any module:callable factory may run, as --allow-code
ENTRY_POINTS = "resflow.factories"  # the entry-point group of the factories installed packages register
HOW_TO_ALLOW = f"--allow-code (or set {ALLOW_CODE_ENV}=1; in Python, resflow.run(cfg, allow_code=True))"


def code_allowed(allow_code: bool | None = None) -> bool:
    """The opt-in for arbitrary factories: `allow_code` when given (the CLI flag, the API argument),
    else the environment variable RESFLOW_ALLOW_CODE (1, true or yes)."""
    if allow_code is not None:
        return bool(allow_code)
    return os.environ.get(ALLOW_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def registered() -> set[str]:
    """The `module:callable` factories installed packages register (entry-point group resflow.factories)."""
    from importlib.metadata import entry_points

    return {f"{ep.module}:{ep.attr}" for ep in entry_points(group=ENTRY_POINTS) if ep.attr}


def check(spec: str | None, allow_code: bool | None = None) -> None:
    """Refuse, in one line and before anything is imported, a factory that would run code the user did
    not choose: anything but `hf:` names and registered factories, unless code is allowed."""
    if spec is None or not isinstance(spec, str) or spec.startswith("hf:"):
        return
    if code_allowed(allow_code) or spec in registered():
        return
    raise ConfigError(
        f"model.factory: {spec!r} is code the config names (importing and calling it runs it); run it only "
        f"if you trust this config: pass {HOW_TO_ALLOW} (hf: factories and those installed packages "
        f"register as entry points {ENTRY_POINTS!r} need none)"
    )
