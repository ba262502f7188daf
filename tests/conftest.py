import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# pytest-xdist's workers start with COLUMNS=80 in their environment (a plain `pytest` run has none).
# Piped output honours COLUMNS (resflow.cli.app.fit_width), so the tests that read whole tables
# would see them narrowed under `-n 2` only; the tests that want a width pass COLUMNS themselves.
os.environ.pop("COLUMNS", None)


@pytest.fixture
def cli_env():
    """Environment for subprocess CLI runs: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def resflow_cmd():
    return [sys.executable, "-m", "resflow"]


# Ctrl-C in a terminal reaches a foreground process whose SIGINT disposition is the default. A test
# run started as a background job of a non-interactive shell (`bash .ci/run &`, nohup, some CI
# runners) inherits SIGINT *ignored*, and Python keeps it ignored in every child it starts, so a
# subprocess test of Ctrl-C would test the launcher, not resflow. This launcher restores the default
# before exec, as a terminal would have it (exec keeps SIG_IGN but resets handlers, hence SIG_DFL).
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'resflow', *sys.argv[1:]])"
)


@pytest.fixture
def resflow_cmd_terminal():
    """`resflow` as started from an interactive terminal: SIGINT (Ctrl-C) not ignored."""
    return [sys.executable, "-c", _AS_FROM_A_TERMINAL]
