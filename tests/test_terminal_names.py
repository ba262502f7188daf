"""Issue 25, "terminal and names": names from data (a variant named by `record(name=...)` or a crafted
CSV) are printed as text, never as Rich markup or terminal control codes, in `show`'s run, sweep and
compare tables, in progress lines and in errors; an error line is capped. Each fails on the code
before the fix (escape sequences written raw, `[/bold]` an internal error, `[link=…]` a hyperlink)."""

import subprocess
import sys

import pytest
from clirunner import Runner

from resflow.cli.app import app
from resflow.results.files import read_run, write_run

runner = Runner()
EVIL = "\x1b]0;OWNED\x07\x1b[2Jv[/bold][link=http://evil.example]click[/link]\u202e"
SMALL = ["--set", "model.depth=3", "--set", "model.width=8", "--seeds", "1", "--no-plots"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _renamed(src, dst, name=EVIL):
    """`src` written again to `dst` with every variant renamed (meta.json's checksums redone)."""
    run = read_run(src)
    for table in ("grads", "params", "summary"):
        df = getattr(run, table)
        df["variant"] = [f"{name}{v}" for v in df["variant"]]
    if "name" in run.config:  # a run's title is its config's name
        run.config["name"] = name + run.config["name"]
    return write_run(run, dst)


def _show(directory, cli_env, terminal: bool):
    """`resflow show DIR` in a subprocess; `terminal`: Rich writes colours as to a terminal (FORCE_COLOR)."""
    env = {**cli_env, "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    if terminal:
        env["FORCE_COLOR"] = "1"
        env["TERM"] = "xterm-256color"
    else:
        env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "resflow", "show", str(directory)], env=env, capture_output=True, text=True, timeout=120
    )


def _assert_text_only(out: str):
    assert "\x1b]" not in out  # no OSC: no window title, no hyperlink (OSC 8)
    assert "\x1b[2J" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]0;OWNED" in out and "[/bold]" in out and "[link=http://evil.example]click[/link]" in out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    assert invoke("run", "deep50", *SMALL, "--out", base / "run").exit_code == 0
    sweep = ["--over", "model.residual=false,true", "--workers", "1"]
    assert invoke("sweep", "deep50", *SMALL, *sweep, "--out", base / "sweep").exit_code == 0
    cmp = ["deep50", "deep50-residual", "--workers", "1"]
    assert invoke("compare", *cmp, *SMALL, "--out", base / "cmp").exit_code == 0
    return {kind: _renamed(base / kind, base / f"evil-{kind}") for kind in ("run", "sweep", "cmp")}


@pytest.mark.parametrize("kind", ["run", "sweep", "cmp"])
@pytest.mark.parametrize("terminal", [False, True])
def test_show_prints_names_as_text(dirs, cli_env, kind, terminal):
    result = _show(dirs[kind], cli_env, terminal)
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    _assert_text_only(result.stdout)


def test_progress_lines_print_names_as_text(tmp_path):
    from resflow.report.terminal.console import PlainConsole
    from resflow.report.terminal.progress import SweepProgress

    class P:
        variant = EVIL

    path = tmp_path / "progress.txt"
    with open(path, "w") as fh:
        console = PlainConsole(file=fh, force_terminal=False, width=200)
        progress = SweepProgress(console)
        with progress:
            progress.start(1, 0)
            progress.advance(P())
    _assert_text_only(path.read_text())


def test_an_error_line_is_capped_and_shows_no_control_codes(tmp_path, cli_env):
    huge = "model." + "k" * 20_000  # an unknown key: the message names it (and what is allowed)
    result = subprocess.run(
        [sys.executable, "-m", "resflow", "run", "deep50", "--set", f"{huge}=1", "--out", str(tmp_path / "r")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[:500]
    assert len(lines[0]) < 2_500 and "model.kkk" in lines[0] and "characters left out" in lines[0]
    result = subprocess.run(
        [sys.executable, "-m", "resflow", "run", "deep50", "--set", "model.depth=\x1b[2J\x1b]0;OWNED\x07"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "\x1b" not in result.stderr and "\\x1b[2J" in result.stderr, result.stderr
