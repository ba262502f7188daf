"""Issue 25, reliability round three: "one-line errors instead of 'internal error, a bug in resflow'"
and the misleading messages. Each test reproduces one example of the issue (through the real CLI
where the fault is the process's own: its encoding, its stdout, its environment) and fails on the
code before the fix."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.errors import ConfigError, ResflowError

runner = Runner()
S = ["--set", "model.depth=3", "--set", "model.width=8", "--seeds", "1", "--no-plots"]
SWEEP = ["sweep", "deep50", "--over", "model.depth=1,2", "--set", "model.width=8", "--seeds", "1", "--no-plots"]
TABLES = ("grads.csv", "params.csv", "summary.csv")


def invoke(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def cli(resflow_cmd, env, *args, cwd=None, timeout=120, **kw):
    encoding = env.get("PYTHONIOENCODING") or "utf-8"
    return subprocess.run(
        [*resflow_cmd, *map(str, args)], env=env, cwd=cwd, capture_output=True, encoding=encoding, timeout=timeout, **kw
    )


def one_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, text
    assert "internal error" not in text and "Traceback" not in text, text
    return errors[0]


# ---------------------------------------------------------------------------------------------
# Configs: an empty block list, Hugging Face kwargs transformers refuses, load_config(None)

HF = {
    "name": "g",
    "model": {"factory": "hf:gpt2", "kwargs": {"n_layer": 2, "n_embd": 16, "n_head": 2, "vocab_size": 32, "n_positions": 8}},
    "data": {"batch_size": 2, "tokens": {"vocab": 32, "seq_len": 4}},
}


def test_an_empty_block_list_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.blocks: must name at least one glob pattern"):
        load_config(HF, ["model.blocks=[]"])
    assert load_config(HF, ["model.blocks=['transformer.h.*']"]).model.blocks == ["transformer.h.*"]


@pytest.mark.parametrize(
    "override, named",
    [("model.kwargs.n_layer=abc", "n_layer"), ("model.kwargs.activation_function=nope", "nope")],
    ids=["n_layer-abc", "activation-nope"],
)
def test_hugging_face_kwargs_transformers_refuses_are_a_config_error(tmp_path, override, named):
    pytest.importorskip("transformers")
    from resflow.experiment import run

    with pytest.raises(ConfigError) as info:
        run(load_config(HF, [override]))
    message = str(info.value)
    assert message.startswith("model.kwargs: hf:gpt2 rejected them") and named in message and "\n" not in message
    out = tmp_path / "r"
    result = invoke("run", "--set", override, "--out", out, "--no-plots", _hf_yaml(tmp_path))
    assert result.exit_code == 2 and named in one_error(result.stderr) and not out.exists()


def _hf_yaml(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(HF))
    return path


@pytest.mark.parametrize("ref", [None, 3, ["deep50"]], ids=["None", "int", "list"])
def test_load_config_of_no_path_is_a_config_error(ref):
    with pytest.raises(ConfigError, match="load_config: expected a YAML path, a bundled config name .* got "):
        load_config(ref)


# ---------------------------------------------------------------------------------------------
# A factory that raises, or calls sys.exit: named as the factory's fault, never silent


FACTORIES = """
import sys
def raises(**kw):
    raise RuntimeError("the user's own bug")
def keyerror(**kw):
    return {}["missing"]
def exits(**kw):
    sys.exit(3)
def exits_zero(**kw):
    sys.exit(0)
"""


@pytest.mark.parametrize(
    "name, expected",
    [
        ("raises", "raised RuntimeError: the user's own bug (the error is in the factory)"),
        ("keyerror", "raised KeyError: 'missing' (the error is in the factory)"),
        ("exits", "called sys.exit(3) instead of returning a model"),
        ("exits_zero", "called sys.exit(0) instead of returning a model"),
    ],
)
def test_a_factory_that_raises_or_exits_is_named_in_one_line(tmp_path, monkeypatch, name, expected):
    from resflow.models import factory

    (tmp_path / "round3_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        factory.build(f"round3_factories:{name}", {})
    message = str(info.value)
    assert message == f"model.factory: round3_factories:{name} {expected}" and "\n" not in message


# ---------------------------------------------------------------------------------------------
# Misleading messages: a --set typo blamed on the bundled file, --over worded as --set


def test_a_set_typo_is_blamed_on_the_set_not_on_the_config_file(tmp_path):
    result = invoke("run", "deep50", "--set", "modle.depth=3", "--out", tmp_path / "r")
    line = one_error(result.stderr)
    assert result.exit_code == 2 and line.startswith("error: --set modle: unknown key; did you mean 'model'?"), line
    assert "deep50.yaml" not in line
    # and a key inside a section given whole
    result = invoke("run", "deep50", "--set", "model={depth: 3, width: 8, bogus: 1}", "--out", tmp_path / "r")
    assert one_error(result.stderr).startswith("error: --set model.bogus: unknown key")
    # a typo in the file itself is still the file's
    config = tmp_path / "c.yaml"
    config.write_text("modle: {depth: 3}\n")
    result = invoke("run", config, "--out", tmp_path / "r")
    assert one_error(result.stderr).startswith(f"error: {config}: modle: unknown key")


@pytest.mark.parametrize(
    "over, expected",
    [
        ("=1,2", "--over '=1,2': expected KEY=V1,V2,..., e.g. --over model.depth=1,2,5"),
        ("model..depth=1,2", "--over 'model..depth=1,2': 'model..depth' is not a dotted key"),
        ("model.depth=[1,2", "--over 'model.depth=[1,2': cannot read the value"),
        ("modle.depth=1,2", "--over modle: unknown key; did you mean 'model'?"),
        ("model.block=mlp,transformer", "--over model.block=transformer: model.activation: not used by transformer"),
    ],
)
def test_over_errors_are_worded_as_over(tmp_path, over, expected):
    result = invoke("sweep", "deep50", "--over", over, "--out", tmp_path / "s")
    line = one_error(result.stderr)
    assert result.exit_code == 2 and line == f"error: {expected}" or line.startswith(f"error: {expected}"), line
    assert "--set" not in line and "config:" not in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["-5", "-5GB", "nan", "inf", "0.1"])
def test_a_memory_limit_that_is_not_a_size_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", value)
    result = invoke("run", "deep50", *S, "--out", tmp_path / "r")
    line = one_error(result.stderr)
    assert result.exit_code == 2 and line.startswith(f"error: RESFLOW_MEMORY_LIMIT={value!r}: expected a positive size")
    assert not (tmp_path / "r").exists()
    monkeypatch.setenv("RESFLOW_MEMORY_LIMIT", "none")  # still switches the check off
    assert invoke("run", "deep50", *S, "--out", tmp_path / "r").exit_code == 0


# ---------------------------------------------------------------------------------------------
# Slurm: a parameter of the wrong type, an unknown executor, no Slurm at all


def test_a_slurm_parameter_of_the_wrong_type_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("RESFLOW_SUBMITIT_CLUSTER", "local")
    for option, what in (("timeout_min=abc", "an integer"), ("mem_gb=lots", "a number"), ("nodes=true", "an integer")):
        out = tmp_path / "s"
        result = invoke(*SWEEP, "--backend", "slurm", "--slurm", option, "--out", out)
        line = one_error(result.stderr)
        key = option.split("=")[0]
        assert result.exit_code == 2 and line.startswith(f"error: --slurm {key}: must be {what}"), line
        assert not out.exists() and os.listdir(tmp_path) == []  # no empty sweep dir, no lock


def test_an_unknown_submitit_cluster_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("RESFLOW_SUBMITIT_CLUSTER", "bogus")
    result = invoke(*SWEEP, "--backend", "slurm", "--out", tmp_path / "s")
    line = one_error(result.stderr)
    assert result.exit_code == 2 and "RESFLOW_SUBMITIT_CLUSTER='bogus': expected one of slurm, local, debug" in line
    assert os.listdir(tmp_path) == []


def test_backend_slurm_without_slurm_is_refused_unless_local_jobs_are_asked_for(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("sbatch") or shutil.which("srun"):
        pytest.skip("Slurm is installed here")
    monkeypatch.delenv("RESFLOW_SUBMITIT_CLUSTER", raising=False)
    result = invoke(*SWEEP, "--backend", "slurm", "--out", tmp_path / "s")
    line = one_error(result.stderr)
    assert result.exit_code == 2 and "no Slurm here" in line and "RESFLOW_SUBMITIT_CLUSTER=local" in line
    assert os.listdir(tmp_path) == []  # before today's fix it ran the jobs locally and wrote the sweep


# ---------------------------------------------------------------------------------------------
# The process's own streams: an ASCII or Latin-1 terminal, stdout on a full disk


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_narrow_output_encoding_prints_what_it_can_and_exits_0(tmp_path, resflow_cmd, cli_env, encoding):
    env = {**cli_env, "PYTHONIOENCODING": encoding}
    result = cli(resflow_cmd, env, "run", "deep50", *S, "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert "wrote " in result.stdout and "error" not in result.stderr
    assert "theory (plain tanh MLP x -> phi(W x + b))" in result.stdout  # the closest ASCII, not '?'
    sweep = cli(resflow_cmd, env, *SWEEP, "--out", tmp_path / "s")
    assert sweep.returncode == 0, sweep.stderr
    assert "2 points x 1 seed" in sweep.stderr if encoding == "ascii" else "2 points × 1 seed" in sweep.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_stdout_on_a_full_device_says_only_the_printout_failed(tmp_path, resflow_cmd, cli_env):
    out = tmp_path / "r"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*resflow_cmd, "run", "deep50", *S, "--out", str(out)],
            env=cli_env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    line = one_error(result.stderr)
    assert result.returncode == 1 and line.startswith("error: cannot print to stdout: No space left on device"), line
    assert "files written are complete" in line
    assert all((out / name).is_file() for name in TABLES)  # the results are there, as the line says
    assert "Exception ignored" not in result.stderr


def test_a_bad_mplbackend_does_not_fail_the_figures(tmp_path, resflow_cmd, cli_env):
    env = {**cli_env, "MPLBACKEND": "bogus"}
    out = tmp_path / "r"
    result = cli(
        resflow_cmd, env, "run", "deep50", "--set", "model.depth=3", "--set", "model.width=8", "--seeds", "1", "--out", out
    )
    assert result.returncode == 0, result.stderr
    assert (out / "profile.png").is_file() and (out / "profile.png").read_bytes()[:4] == b"\x89PNG"
    # a backend matplotlib knows is applied as matplotlib would apply it
    check = subprocess.run(
        [sys.executable, "-c", "import resflow.report.figures.plots, matplotlib; print(matplotlib.get_backend())"],
        env={**cli_env, "MPLBACKEND": "svg"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip() == "svg", check.stderr


def test_the_closest_ascii_of_resflows_own_characters():
    from resflow.cli.streams import HANDLER

    text = "3 × 4 → 5 … σ_w² ≈ 0.3, χ₁, café"
    assert text.encode("ascii", errors=HANDLER).decode() == "3 x 4 -> 5 ... sigma_w^2 ~ 0.3, chi1, cafe"
    assert textwrap.dedent(text).encode("latin-1", errors=HANDLER).decode("latin-1").startswith("3 × 4 -> 5")


def test_resflow_error_is_the_base_of_the_stdout_fault():
    from resflow.cli.streams import StdoutFault

    assert issubclass(StdoutFault, ResflowError) and StdoutFault(OSError(28, "No space left on device")).exit_code == 1
