"""The public imports that docs, users and other tools rely on keep working across the layout."""

import importlib
import subprocess
import sys
from pathlib import Path

import resflow

PUBLIC = ["__version__", "load_config", "run", "RunResult", "write_run", "read_run", "ResflowError", "ConfigError"]


def test_top_level_api_is_listed_and_importable():
    assert set(PUBLIC) <= set(dir(resflow))
    from resflow import ConfigError, ResflowError, load_config, run  # noqa: F401

    assert issubclass(resflow.ConfigError, resflow.ResflowError)
    assert callable(resflow.run) and callable(resflow.load_config)
    assert resflow.write_run is importlib.import_module("resflow.results").write_run


def test_package_level_entry_points():
    from resflow.compare import load_refs, run_compare  # noqa: F401
    from resflow.results import RunResult, read_run, write_run  # noqa: F401
    from resflow.sweep import load_base, make_plan, run_sweep  # noqa: F401

    base, yaml_axes = load_base("deep50", ["model.depth=2", "model.width=4"])
    plan = make_plan(base, yaml_axes, cli_axes=["model.residual=false,true"])
    assert {p.columns["residual"] for p in plan.points} == {False, True}


def test_the_console_script_target_and_typing_marker():
    from resflow.cli import main

    assert callable(main)
    assert (Path(resflow.__file__).parent / "py.typed").is_file()


def test_importing_resflow_imports_nothing_heavy():
    code = "import sys, resflow; print(','.join(m for m in ('torch', 'pandas', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
