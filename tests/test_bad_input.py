"""Every bad input through the real CLI: the exit code, exactly one line on stderr naming the problem,
no traceback, and nothing written (no results dir, no staging dir, no lock file)."""

import os

import pytest
from clirunner import Runner

from resflow.cli.app import app

pytestmark = pytest.mark.smoke  # also run at the lowest allowed dependency versions (.ci/run)

runner = Runner()
OK = "model: {depth: 3, width: 4}\n"
TRANSFORMER = "loss: random\nmodel: {block: transformer, depth: 2, width: 8, residual: true, norm: pre"

# id, config file text (None: no file), extra args, exit code, substrings of the one stderr line
CASES = [
    ("malformed-yaml", "model:\n  depth: 3\n   width: 4\n", [], 2, ["invalid YAML at line 3, column 9"]),
    (
        "python-object-tag",
        "!!python/object/apply:os.system ['touch {sentinel}']\n",
        [],
        2,
        ["!!python/object/apply:os.system", "not allowed"],
    ),
    ("python-tag-nested", "model: !!python/name:os.system {{}}\n", [], 2, ["not allowed"]),
    ("empty-file", "", [], 2, ["the file is empty"]),
    ("only-comments", "# nothing\n", [], 2, ["the file is empty"]),
    ("top-level-list", "- 1\n- 2\n", [], 2, ["top level must be a mapping", "list"]),
    ("top-level-scalar", "42\n", [], 2, ["top level must be a mapping", "int"]),
    ("duplicate-key", "model: {depth: 3, width: 4}\nmodel: {depth: 4}\n", [], 2, ["'model' appears twice", "line 2"]),
    ("bad-tagged-int", OK + "seed: !!int abc\n", [], 2, ["line 2", "'abc'"]),
    ("impossible-date", OK + "name: 2001-02-30\n", [], 2, ["line 2", "day is out of range"]),
    ("deep-nesting", "model: " + "[" * 3000 + "]" * 3000 + "\n", [], 2, ["invalid YAML"]),
    ("unknown-top-key", OK + "sedes: 3\n", [], 2, ["sedes: unknown key", "did you mean 'seeds'", "allowed here"]),
    (
        "unknown-model-key",
        "model: {depth: 3, width: 4, activaton: relu}\n",
        [],
        2,
        ["model.activaton: unknown key", "did you mean 'model.activation'"],
    ),
    (
        "unknown-init-key",
        "model: {depth: 3, width: 4, init: {scael: 2}}\n",
        [],
        2,
        ["model.init.scael: unknown key", "did you mean 'model.init.scale'"],
    ),
    ("unknown-data-key", OK + "data: {batch: 3}\n", [], 2, ["data.batch: unknown key", "data.batch_size"]),
    ("missing-width", "model: {depth: 3}\n", [], 2, ["model.width: required key is missing"]),
    ("section-not-mapping", "model: 3\n", [], 2, ["model: must be a section"]),
    ("depth-string", "model: {depth: '3', width: 4}\n", [], 2, ["model.depth", "integer", "'3'", "without quotes"]),
    ("width-list", "model: {depth: 3, width: [4, 8]}\n", [], 2, ["model.width", "integer", "[4, 8]"]),
    ("depth-float", "model: {depth: 3.5, width: 4}\n", [], 2, ["model.depth", "3.5"]),
    (
        "bool-looking-string",
        "model: {depth: 3, width: 4, residual: 'yes'}\n",
        [],
        2,
        ["model.residual", "boolean", "'yes'", "true or false"],
    ),
    ("bool-for-int", "model: {depth: true, width: 4}\n", [], 2, ["model.depth", "True"]),
    ("depth-zero", "model: {depth: 0, width: 4}\n", [], 2, ["model.depth", "greater than or equal to 1", "got 0"]),
    ("depth-negative", "model: {depth: -5, width: 4}\n", [], 2, ["model.depth", "got -5"]),
    ("width-zero", "model: {depth: 3, width: 0}\n", [], 2, ["model.width", "got 0"]),
    ("batch-zero", OK + "data: {batch_size: 0}\n", [], 2, ["data.batch_size", "got 0"]),
    ("seeds-zero", OK + "seeds: 0\n", [], 2, ["seeds", "got 0"]),
    ("seed-too-big", OK + "seed: 100000000000000000000000\n", [], 2, ["seed", "less than or equal to"]),
    ("negative-init-scale", "model: {depth: 3, width: 4, init: {scale: -1}}\n", [], 2, ["model.init.scale", "got -1"]),
    ("nan", "model: {depth: 3, width: 4, residual_scale: .nan}\n", [], 2, ["model.residual_scale", "finite", "nan"]),
    ("inf", "model: {depth: 3, width: 4, init: {scale: .inf}}\n", [], 2, ["model.init.scale", "finite", "inf"]),
    (
        "unknown-activation",
        "model: {depth: 3, width: 4, activation: tnah}\n",
        [],
        2,
        ["model.activation", "'tnah'", "did you mean 'tanh'"],
    ),
    ("unknown-norm", "model: {depth: 3, width: 4, norm: prenorm}\n", [], 2, ["model.norm", "'pre'", "'prenorm'"]),
    ("unknown-block", "model: {depth: 3, width: 4, block: transfomer}\n", [], 2, ["model.block", "did you mean 'transformer'"]),
    (
        "rezero-without-residual",
        TRANSFORMER.replace("residual: true", "residual: false") + ", rezero: true}\n",
        [],
        2,
        ["model.rezero", "model.residual"],
    ),
    ("heads-not-dividing-width", TRANSFORMER + ", heads: 3}\n", [], 2, ["model.heads", "divide", "model.width 8"]),
    ("bad-name", OK + "name: 'my run/../x'\n", [], 2, ["name: must be letters, digits"]),
    ("set-missing-equals", OK, ["--set", "model.depth"], 2, ["--set 'model.depth'", "KEY=VALUE"]),
    ("set-empty-key", OK, ["--set", "=3"], 2, ["KEY=VALUE"]),
    ("set-bad-dotted-key", OK, ["--set", "model..depth=3"], 2, ["not a dotted key"]),
    ("set-unknown-key", OK, ["--set", "model.dept=3"], 2, ["model.dept: unknown key", "did you mean 'model.depth'"]),
    ("set-bad-value", OK, ["--set", "model.depth=abc"], 2, ["--set model.depth", "'abc'"]),
    ("set-unreadable-value", OK, ["--set", "model.depth=[1,"], 2, ["--set 'model.depth=[1,'", "cannot read the value"]),
    ("set-python-tag", OK, ["--set", "model.depth=!!python/object/apply:os.system [x]"], 2, ["cannot read the value"]),
    ("set-below-value", OK, ["--set", "model.depth.x=3"], 2, ["model.depth is a value, not a section"]),
    ("set-zero", OK, ["--set", "data.batch_size=0"], 2, ["--set data.batch_size", "got 0"]),
    (
        "option-seeds-zero",
        OK,
        ["--seeds", "0"],
        2,
        ["'--seeds'", ("greater than or equal to 1", "not in the range 1<=x")],
    ),  # (click < 8.2's words)
    ("option-seeds-not-int", OK, ["--seeds", "abc"], 2, ["--seeds", "integer"]),
    ("sweep-config-to-run", OK + "sweep:\n  model.depth: [1, 2]\n", [], 2, ["sweep: section", "resflow sweep"]),
    (
        "union-inf",
        TRANSFORMER + "}\n",
        ["--set", "model.residual_scale=.inf"],
        2,
        ["--set model.residual_scale: must be a finite number or 'deepnorm', got inf"],
    ),
    (
        "six-errors",
        "seeds: 0\nmodel: {depth: 0, width: -1, norm: middle, activation: foo}\ndata: {batch_size: 0}\n",
        [],
        2,
        ["seeds:", "(and 5 more:", "model.activation", "; …)"],
    ),
    ("unknown-dataset", OK + "data: {dataset: mnist}\n", [], 2, ["data.dataset", "'mnist'", "'digits'"]),
    (
        "image-dataset-for-transformer",
        TRANSFORMER + "}\ndata: {dataset: digits}\n",
        [],
        2,
        ["data.dataset", "image dataset", "transformer"],
    ),
    (
        "conv-depth-not-6n+2",
        "model: {block: conv, depth: 21, width: 4}\n",
        [],
        2,
        ["model.depth", "6n + 2", "got 21", "nearest: 20, 26"],
    ),
    ("conv-depth-too-small", "model: {block: conv, depth: 3, width: 4}\n", [], 2, ["model.depth", "6n + 2", "nearest: 8"]),
    (
        "conv-layernorm",
        "model: {block: conv, depth: 8, width: 4, norm_type: layernorm}\n",
        [],
        2,
        ["model.norm_type", "batchnorm or groupnorm"],
    ),
    ("conv-norm-pre", "model: {block: conv, depth: 8, width: 4, norm: pre}\n", [], 2, ["model.norm", "'conv'", "'none'"]),
    (
        "conv-shared-weights",
        "model: {block: conv, depth: 8, width: 4, share_weights: true}\n",
        [],
        2,
        ["model.share_weights: not a key of block 'conv' (its keys: block, depth, width,"],
    ),
    (
        "groups-not-dividing-width",
        "model: {block: conv, depth: 8, width: 6, norm_type: groupnorm, norm_groups: 4}\n",
        [],
        2,
        ["model.norm_groups", "4 groups do not divide model.width 6"],
    ),
    (
        "default-groups-not-dividing-width",
        "model: {depth: 2, width: 12, norm: pre, norm_type: groupnorm}\n",
        [],
        2,
        ["model.norm_groups", "8 groups"],
    ),
    (
        "batchnorm-batch-1",
        "model: {block: conv, depth: 8, width: 4}\ndata: {batch_size: 1}\n",
        [],
        2,
        ["data.batch_size", "batchnorm", "at least 2", "got 1"],
    ),
    (
        "batchnorm-train-batch-1",
        "model: {depth: 2, width: 4, norm: pre, norm_type: batchnorm}\ndata: {dataset: digits}\n"
        "train: {steps: 2, batch_size: 1}\n",
        [],
        2,
        ["train.batch_size", "batchnorm", "got 1"],
    ),
    (
        "batchnorm-for-transformer",
        TRANSFORMER + ", norm_type: batchnorm}\n",
        [],
        2,
        ["model.norm_type", "'batchnorm'", "'layernorm' or 'rmsnorm'"],
    ),
    (
        "shortcut-for-mlp",
        "model: {depth: 2, width: 4, shortcut: projection}\n",
        [],
        2,
        ["model.shortcut: not a key of block 'mlp' (its keys: block, depth, width,"],
    ),
    ("cross-entropy-without-dataset", OK + "loss: cross_entropy\n", [], 2, ["loss", "cross_entropy", "data.dataset"]),
    (
        "conv-training-without-dataset",
        "model: {block: conv, depth: 8, width: 4}\ntrain: {steps: 3}\n",
        [],
        2,
        ["train.steps", "train.task: classify", "data.dataset"],
    ),
    (
        "teacher-on-a-dataset",
        OK + "data: {dataset: digits}\ntrain: {steps: 3, task: teacher}\n",
        [],
        2,
        ["train.task", "'teacher'", "classify"],
    ),
    (
        "post-batchnorm-sum-loss",
        "loss: sum\nmodel: {depth: 2, width: 4, residual: true, norm: post, norm_type: batchnorm}\n",
        [],
        2,
        ["loss", "zero gradient", "batchnorm"],
    ),
    (
        "option-seeds-too-many",
        OK,
        ["--seeds", "2000000"],
        2,
        ["'--seeds'", ("less than or equal to 1000000", "not in the range 1<=x<=1000000")],
    ),
    ("unknown-option", OK, ["--sed", "3"], 2, ["No such option: --sed"]),
    ("config-missing", None, [], 2, ["not found", "no such file"]),
    ("config-is-directory", "DIR", [], 2, ["is a directory"]),
    ("config-not-text", b"\xff\xfe\x00binary", [], 2, ["not a text file"]),
    ("out-is-a-file", OK, ["--out", "{file}"], 2, ["exists and is a file"]),
    ("out-parent-is-a-file", OK, ["--out", "{file}/sub"], 2, ["is a file"]),
    ("out-unwritable", OK, ["--out", "/proc/resflow-test/out"], 2, ["'/proc/resflow-test/out' cannot be created"]),
    (
        "too-much-memory",
        "model: {depth: 1000, width: 100000}\n",
        [],
        2,
        ["needs about", "TB", "weights and gradients", "reduce model.width"],
    ),
    (
        "too-much-memory-batch",
        "model: {depth: 1000, width: 1000}\ndata: {batch_size: 10000000}\n",
        [],
        2,
        ["activations", "reduce data.batch_size"],
    ),
    (
        "too-much-memory-seeds",
        "model: {depth: 10000, width: 1}\ndata: {batch_size: 1}\nseeds: 1000000\n",
        [],
        2,
        ["result rows", "reduce seeds"],
    ),
]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name,text,args,code,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(tmp_path, name, text, args, code, expected, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sentinel = tmp_path / "pwned"
    afile = tmp_path / "a-file.txt"
    afile.write_text("not a dir")
    config = tmp_path / "cfg.yaml"
    if text == "DIR":
        config.mkdir()
    elif isinstance(text, bytes):
        config.write_bytes(text)
    elif text is not None:
        config.write_text(text.format(sentinel=sentinel) if "{sentinel}" in text else text)
    out = tmp_path / "out"
    args = [a.format(file=afile) for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    before = sorted(os.listdir(tmp_path))
    result = runner.invoke(app, ["run", str(config), *args])
    lines = _lines(result.stderr)
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for part in expected:  # a tuple: any of its wordings
        assert any(p in lines[0] for p in ((part,) if isinstance(part, str) else part)), (part, lines[0])
    assert (
        "Traceback" not in result.output
        and not isinstance(result.exception, Exception)
        or isinstance(result.exception, SystemExit)
    )
    assert not sentinel.exists()  # YAML never ran anything
    assert sorted(os.listdir(tmp_path)) == before  # nothing written: no out dir, no staging, no lock
    assert afile.read_text() == "not a dir"


def test_existing_results_are_not_overwritten(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--set", "model.depth=4"])
    assert result.exit_code == 2 and _lines(result.stderr)[0].startswith("error: ")
    assert "--force" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root reads and writes anything")
def test_unreadable_config_and_unwritable_out(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    config.chmod(0)
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "permission denied" in result.stderr
    config.chmod(0o644)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    result = runner.invoke(app, ["run", str(config), "--out", str(locked / "o")])
    assert result.exit_code == 2 and "not writable" in result.stderr


def test_non_finite_gradients_are_data_not_errors(tmp_path):
    """A linear chain with weights 1e30: the gradient overflows to inf; the run completes, flags it."""
    import pandas as pd

    config = tmp_path / "c.yaml"
    config.write_text("model: {depth: 6, width: 4, activation: identity, init: {scale: 1e30}}\n")
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    grads = pd.read_csv(tmp_path / "out" / "grads.csv")
    assert not summary["finite"].any()
    assert not grads["input_grad_norm"].map(lambda v: pd.notna(v) and abs(v) < float("inf")).all()
    assert "non-finite" in result.stdout


def test_an_unexpected_exception_is_one_line_and_a_crash_report(tmp_path, monkeypatch):
    import resflow.experiment

    def broken(cfg, on_seed=None):
        raise ValueError("something nobody expected\nsecond line")

    monkeypatch.setattr(resflow.experiment, "run", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text(OK)
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    lines = _lines(result.stderr)
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert "internal error" in lines[0] and "ValueError: something nobody expected" in lines[0]
    reports = list(tmp_path.glob("resflow-crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in lines[0]
    assert "Traceback" in reports[0].read_text() and "def broken" not in lines[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_subprocess_bad_input_has_no_traceback(tmp_path, resflow_cmd, cli_env):
    import subprocess

    bad = tmp_path / "c.yaml"
    bad.write_text("!!python/object/apply:os.system ['touch %s']\n" % (tmp_path / "pwned"))
    for args in (["run", str(bad)], ["run", "--seeds", "x", str(bad)], ["run"]):
        proc = subprocess.run(
            [*resflow_cmd, *args, "--out", str(tmp_path / "o")] if args != ["run"] else [*resflow_cmd, "run"],
            capture_output=True,
            text=True,
            env=cli_env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert len(_lines(proc.stderr)) == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o").exists()
