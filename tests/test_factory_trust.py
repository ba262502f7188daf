"""Issue 25, "a config never runs code the user did not choose": model.factory's `module:callable`
runs only with an opt-in for that invocation (--allow-code, allow_code=True, RESFLOW_ALLOW_CODE=1);
`hf:` names and factories an installed package registers (entry points `resflow.factories`) need none.
Each refusal is one line and runs nothing: the configs below would create a file if they ran."""

import os
import subprocess
import sys

import pytest
import yaml

from resflow.config import load_config
from resflow.errors import ConfigError
from resflow.experiment import run


def _evil(tmp_path, name="evil.yaml", extra=None):
    """A config whose factory, if called, runs a shell command that creates `pwned`."""
    witness = tmp_path / "pwned"
    data = {
        "name": "evil",
        "model": {"factory": "os:system", "kwargs": {"command": f"touch {witness}"}},
        "data": {"shape": [2, 3]},
        **(extra or {}),
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path, witness


def cli(cli_env, *args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "resflow", *map(str, args)],
        env={**cli_env, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _refused(result, witness):
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "--allow-code" in errors[0] and "RESFLOW_ALLOW_CODE=1" in errors[0] and "os:system" in errors[0]
    assert "Traceback" not in result.stderr
    assert not witness.exists()  # nothing ran


@pytest.mark.parametrize("command", ["run", "sweep", "compare"])
def test_a_module_callable_factory_is_refused_without_an_opt_in(tmp_path, cli_env, command):
    evil, witness = _evil(tmp_path)
    env = {k: v for k, v in cli_env.items() if k != "RESFLOW_ALLOW_CODE"}
    args = {
        "run": ["run", evil, "--out", tmp_path / "r"],
        "sweep": ["sweep", evil, "--over", "seeds=1,2", "--workers", "2", "--out", tmp_path / "r"],
        "compare": ["compare", evil, "deep50", "--workers", "2", "--out", tmp_path / "r"],
    }[command]
    _refused(cli(env, *args), witness)
    assert not (tmp_path / "r").exists() and not (tmp_path / ".r.lock").exists()


def test_a_factory_given_by_set_or_by_a_sweep_axis_is_refused(tmp_path, cli_env):
    witness = tmp_path / "pwned"
    sets = ["--set", "model.factory=os:system", "--set", f"model.kwargs={{command: 'touch {witness}'}}"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"name": "p", "model": {"factory": "hf:gpt2"}, "data": {"shape": [2, 3]}}))
    _refused(cli(cli_env, "run", plain, *sets, "--out", tmp_path / "r"), witness)
    # a sweep axis that makes a point's factory code: the whole sweep is refused before it starts
    axis, _ = _evil(tmp_path, "axis.yaml", {"sweep": {"model.kwargs.command": [f"touch {witness}", "true"]}})
    _refused(cli(cli_env, "sweep", axis, "--workers", "1", "--out", tmp_path / "s"), witness)
    assert not (tmp_path / "s").exists()


def test_the_api_refuses_unless_allow_code_or_the_environment_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("RESFLOW_ALLOW_CODE", raising=False)
    evil, witness = _evil(tmp_path)
    cfg = load_config(evil)  # loading is harmless: nothing is imported or called
    with pytest.raises(ConfigError, match="allow_code=True"):
        run(cfg)
    assert not witness.exists()
    tiny = load_config({"name": "t", "model": {"factory": "test_factory:tiny_net"}, "data": {"shape": [4, 5]}})
    with pytest.raises(ConfigError, match="--allow-code"):
        run(tiny)
    assert len(run(tiny, allow_code=True).grads) == 3
    monkeypatch.setenv("RESFLOW_ALLOW_CODE", "1")
    assert len(run(tiny).grads) == 3
    with pytest.raises(ConfigError, match="--allow-code"):
        run(tiny, allow_code=False)  # the argument wins over the environment


FACTORY_MODULE = """
from torch import nn

def build(depth=2, width=4):
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth)])
"""


def test_once_opted_in_a_factory_module_in_the_current_directory_imports_in_every_worker(tmp_path, cli_env):
    (tmp_path / "myfactories.py").write_text(FACTORY_MODULE)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"name": "mine", "model": {"factory": "myfactories:build"}, "data": {"shape": [3, 4]}}))
    refused = cli(cli_env, "run", "mine.yaml", "--out", "r", cwd=tmp_path)
    assert refused.returncode == 2 and "--allow-code" in refused.stderr, refused.stderr
    done = cli(cli_env, "run", "mine.yaml", "--out", "r", "--allow-code", "--no-plots", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # a sweep's worker processes get the same decision with their task (the environment says nothing)
    swept = cli(
        cli_env,
        *["sweep", "mine.yaml", "--over", "model.kwargs.depth=2,3", "--workers", "2", "--out", "s", "--no-plots"],
        "--allow-code",
        cwd=tmp_path,
    )
    assert swept.returncode == 0, swept.stderr
    import pandas as pd

    grads = pd.read_csv(tmp_path / "s" / "grads.csv")
    assert sorted(grads.groupby("depth")["layer"].max().tolist()) == [1, 2]


def test_a_factory_an_installed_package_registers_needs_no_opt_in(tmp_path, cli_env):
    site = tmp_path / "site"
    (site / "regpkg_x").mkdir(parents=True)
    (site / "regpkg_x" / "__init__.py").write_text(FACTORY_MODULE)
    info = site / "regpkg_x-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: regpkg-x\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[resflow.factories]\nbuild = regpkg_x:build\n")
    cfg = tmp_path / "reg.yaml"
    cfg.write_text(yaml.safe_dump({"name": "reg", "model": {"factory": "regpkg_x:build"}, "data": {"shape": [3, 4]}}))
    env = {"PYTHONPATH": f"{site}{os.pathsep}{cli_env['PYTHONPATH']}"}
    done = cli(cli_env, "run", cfg, "--out", tmp_path / "r", "--no-plots", env=env)
    assert done.returncode == 0, done.stderr
    # the same package's other callables are not registered: refused
    cfg.write_text(yaml.safe_dump({"name": "reg", "model": {"factory": "regpkg_x:nn"}, "data": {"shape": [3, 4]}}))
    other = cli(cli_env, "run", cfg, "--out", tmp_path / "r2", env=env)
    assert other.returncode == 2 and "--allow-code" in other.stderr, other.stderr


def test_the_trust_model_is_documented_truthfully():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text()
    assert "--allow-code" in text and "RESFLOW_ALLOW_CODE" in text and "resflow.factories" in text
