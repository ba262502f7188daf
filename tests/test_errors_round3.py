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
        factory.build(f"round3_factories:{name}", {}, allow_code=True)
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
        ("model.block=mlp,transformer", "--over model.block=transformer: model.activation: not a key of block 'transformer'"),
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


# ---------------------------------------------------------------------------------------------
# --resume: a point file whose values have the wrong types is run again, never assembled


def _set_cell(part: dict, column: str, value) -> None:
    """A point file's stored column (compactly encoded) rewritten as a plain list whose first cell is `value`."""
    from resflow.sweep.points import _decode

    values = list(_decode(part["cols"][column], part["n"]))
    values = [v.item() if hasattr(v, "item") else v for v in values]
    values[0] = value
    part["cols"][column] = values


SMALL = ["sweep", "deep50", "--over", "model.depth=1,2", "--set", "model.width=8", "--seeds", "2", "--no-plots", "--workers", "1"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _set_cell(p["grads"], "input_grad_norm", "abc"),
        lambda p: _set_cell(p["grads"], "seed", "x"),
        lambda p: _set_cell(p["grads"], "seed", True),
        lambda p: p["grads"]["const"].__setitem__("layer", "abc"),
        lambda p: p["grads"]["const"].__setitem__("step", {"a": 1}),
        lambda p: _set_cell(p["summary"], "grad_first", [1]),
        lambda p: p["summary"]["const"].__setitem__("grad_ratio", "big"),
        lambda p: p["grads"]["const"].__setitem__("variant", "another"),
    ],
    ids=["str-measure", "str-seed", "bool-seed", "str-layer", "dict-step", "list-cell", "str-ratio", "variant"],
)
def test_a_point_file_with_wrong_typed_values_is_run_again_on_resume(tmp_path, damage):
    import json

    reference = tmp_path / "reference"
    assert invoke(*SMALL, "--out", reference).exit_code == 0
    out = tmp_path / "s"
    assert invoke(*SMALL, "--out", out).exit_code == 0
    first = sorted((out / "points").glob("*.json"))[0]
    payload = json.loads(first.read_text())
    damage(payload)
    first.write_text(json.dumps(payload))
    for name in TABLES:
        (out / name).unlink()
    result = invoke(*SMALL, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "1 point file(s)" in result.stderr and "run again" in result.stderr
    for name in TABLES:  # the point ran again: the tables as a sweep that was never damaged writes them
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert invoke("show", out).exit_code == 0


def test_an_undamaged_resume_reads_every_point_file():
    from resflow.sweep.points import _well_typed

    assert _well_typed("seed", [0, 1]) and _well_typed("input_grad_norm", [1.5, float("nan"), None])
    assert _well_typed("module", ["a", None]) and _well_typed("residual", [True, False])
    assert not _well_typed("layer", [None]) and not _well_typed("module", [{"a": 1}])


# ---------------------------------------------------------------------------------------------
# A full disk at the start: the lock's own write names the results dir and leaves no lock behind


def _can_unshare_mount() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_unshare_mount(), reason="cannot mount a tmpfs here (unshare)")


@needs_tmpfs
def test_a_full_disk_names_the_path_for_the_lock_and_the_export(tmp_path, cli_env, resflow_cmd):
    source = tmp_path / "src"
    assert invoke("run", "deep50", *S, "--out", source).exit_code == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    py = " ".join(resflow_cmd)
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {disk} && head -c 16384 /dev/zero > {disk}/fill 2>/dev/null; "
        f"{py} run deep50 {' '.join(S)} --out {disk}/r; echo rc=$?; "
        f"{py} demo tanh50 --seeds 5 --out {disk}/d; echo rc=$?; "
        f"{py} export {source} {disk}/tb --to tensorboard; echo rc=$?; ls -A {disk}"
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == errors  # no thread's traceback
    assert errors[0] == f"error: cannot start writing '{disk}/r': No space left on device", result.stderr
    assert errors[1] == f"error: cannot start writing '{disk}/d': No space left on device", result.stderr
    assert errors[2].startswith("error: cannot write ") and f"'{disk}/tb" in errors[2], result.stderr  # (its dir or its mark)
    assert errors[2].endswith(": No space left on device"), result.stderr
    assert result.stdout.split() == ["rc=1", "rc=1", "rc=1", "fill"], result.stdout  # no lock, no partial export


# ---------------------------------------------------------------------------------------------
# TensorBoard: a stopped export or run leaves no partial event dir; a run logged twice


def _events(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


def _term_once_events_appear(proc, root: Path, newer_than: float = 0.0, timeout: float = 90) -> None:
    import signal
    import time

    t0 = time.monotonic()
    while not any(p.stat().st_mtime > newer_than for p in _events(root) if p.exists()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < timeout, "no event file appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_sigterm_during_export_leaves_no_partial_event_dir(tmp_path, resflow_cmd, cli_env):
    pytest.importorskip("tensorboard")
    source = tmp_path / "src"
    assert (
        invoke(
            "run", "deep50", "--set", "model.depth=200", "--set", "model.width=8", "--seeds", "16", "--no-plots", "--out", source
        ).exit_code
        == 0
    )
    dest = tmp_path / "logs" / "tb"
    proc = subprocess.Popen(
        [*resflow_cmd, "export", str(source), str(dest), "--to", "tensorboard"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _term_once_events_appear(proc, dest)
    assert proc.returncode == 143, proc.stderr.read()
    assert "nothing was written" in proc.stderr.read()
    assert os.listdir(tmp_path / "logs") == []  # the export's dir is gone, the parent left as it was


TRAIN = ["--set", "model.depth=3", "--set", "model.width=8", "--seeds", "2", "--no-plots"]


def test_run_tensorboard_into_a_logdir_holding_that_run_is_refused_or_replaced(tmp_path, resflow_cmd, cli_env):
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    first = invoke("run", "deep50", *TRAIN, "--set", "train.steps=4", "--out", tmp_path / "a", "--tensorboard", logdir)
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in _events(logdir)}
    assert len(before) == 2
    again = invoke("run", "deep50", *TRAIN, "--set", "train.steps=4", "--out", tmp_path / "b", "--tensorboard", logdir)
    line = one_error(again.stderr)
    assert again.exit_code == 2 and "already holds a TensorBoard log of this run; pass --force" in line
    assert {p: p.read_bytes() for p in _events(logdir)} == before and not (tmp_path / "b").exists()
    forced = invoke(
        "run", "deep50", *TRAIN, "--set", "train.steps=4", "--out", tmp_path / "b", "--tensorboard", logdir, "--force"
    )
    assert forced.exit_code == 0, forced.output
    after = _events(logdir)
    assert len(after) == 2 and not set(after) & set(before)  # one events file per seed: the new run's only
    # a stopped run with --force keeps the earlier log as it was, and leaves no partial one
    proc = subprocess.Popen(
        [
            *resflow_cmd,
            "run",
            "deep50",
            *TRAIN,
            "--set",
            "train.steps=100000",
            "--out",
            str(tmp_path / "c"),
            "--tensorboard",
            str(logdir),
            "--force",
        ],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kept = {p: p.read_bytes() for p in after}
    _term_once_events_appear(proc, tmp_path, newer_than=max(p.stat().st_mtime for p in after))
    assert proc.returncode == 143
    assert {p: p.read_bytes() for p in _events(logdir)} == kept
    assert not (tmp_path / "c").exists() and not list(logdir.glob(".*"))
    # anything but resflow's own layout is never replaced
    (logdir / "deep50" / "notes.txt").write_text("mine")
    refused = invoke(
        "run", "deep50", *TRAIN, "--set", "train.steps=4", "--out", tmp_path / "d", "--tensorboard", logdir, "--force"
    )
    assert refused.exit_code == 2 and "'notes.txt', which is not a log resflow wrote" in one_error(refused.stderr)


def test_demo_force_over_a_run_dir_keeps_nothing_of_the_run(tmp_path):
    out = tmp_path / "r"
    assert invoke("run", "deep50", *S, "--out", out).exit_code == 0
    assert invoke("demo", "tanh50", "--seeds", "3", "--out", out).exit_code == 2  # refused without --force
    result = invoke("demo", "tanh50", "--seeds", "3", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["demo.csv"] and sorted(os.listdir(tmp_path)) == ["r"]


# ---------------------------------------------------------------------------------------------
# Ray: a local instance that cannot start (a memory ulimit) is one line, and nothing stays


def test_a_local_ray_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from resflow.executors import pool as workers

    def init(**kwargs):  # what Ray raises when its raylet never registers (seen under ulimit -v)
        raise Exception("The current node timed out during startup. This could happen because some of the raylet failed")

    shut = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(workers, "disconnect_ray", lambda: shut.append(True))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = invoke(*SWEEP, "--backend", "ray", "--out", tmp_path / "s")
    line = one_error(result.stderr)
    assert result.exit_code == 1 and line.startswith("error: cannot start a local Ray instance: Exception: The current node")
    assert "ulimit -v" in line and "nothing was written" in line
    assert shut == [True] and os.listdir(tmp_path) == []
