"""A CliRunner whose results have .stdout, .stderr and .output (both) on every click resflow allows:
click 8.2+ keeps stderr apart by itself; before it, only with mix_stderr=False, and then .output is
stdout alone, so it is given here as both (the smoke tests also run at the lowest versions)."""

import inspect

from typer.testing import CliRunner

_OLD_CLICK = "mix_stderr" in inspect.signature(CliRunner.__init__).parameters


class _Both:
    def __init__(self, result):
        self._result = result
        self.output = result.stdout + result.stderr

    def __getattr__(self, name):
        return getattr(self._result, name)


class Runner(CliRunner):
    def __init__(self, **kwargs):
        super().__init__(**({"mix_stderr": False} if _OLD_CLICK else {}), **kwargs)

    def invoke(self, *args, **kwargs):
        result = super().invoke(*args, **kwargs)
        return _Both(result) if _OLD_CLICK else result
