"""`python -m scripts.docs`: marked output blocks in the docs are what their commands print; a
deliberately edited number fails the check; the slow blocks' commands and the examples still run
(at small sizes)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from scripts import docs

ROOT = docs.ROOT


def _page(tmp_path, cmd="resflow theory deep50"):
    page = tmp_path / "page.md"
    page.write_text(
        f"# A page\n\nSome text.\n\n<!-- docs-output: {cmd} -->\n```\nstale\n```\n<!-- /docs-output -->\n\nMore text.\n"
    )
    return page


def test_a_block_is_written_from_its_command_and_an_edited_number_fails_the_check(tmp_path, capsys):
    page = _page(tmp_path)
    assert docs.main(["--check", "--only", str(page)]) == 1  # "stale" is not what the command prints
    assert docs.main(["--only", str(page)]) == 0
    text = page.read_text()
    # the reference: the command's own output, run here separately
    theory = subprocess.run(
        docs.argv("resflow theory deep50"), env=docs.environment(), capture_output=True, text=True, check=True
    )
    assert f"```text\n$ resflow theory deep50\n{theory.stdout}```\n<!-- /docs-output -->" in text
    assert text.startswith("# A page\n\nSome text.\n\n") and text.endswith("\nMore text.\n")  # the rest untouched
    capsys.readouterr()
    assert docs.main(["--check", "--only", str(page)]) == 0
    edited = text.replace("q* = 0.00775367", "q* = 0.00775368")
    assert edited != text
    page.write_text(edited)
    assert docs.main(["--check", "--only", str(page)]) == 1
    out = capsys.readouterr().out
    assert f"{page}:5: resflow theory deep50" in out
    assert page.read_text() == edited  # --check writes nothing


@pytest.mark.parametrize(
    "page, number, edited",
    [
        ("docs/guarantees.md", "16.0 GB of memory", "18.9 GB of memory"),  # the memory limit (RESFLOW_MEMORY_LIMIT)
        ("docs/errors.md", "'results/deep50/params.csv'", "'results/deep50/grads.csv'"),  # the full disk
    ],
)
def test_an_edited_error_line_fails_the_check(page, number, edited, tmp_path, capsys):
    """The error-line blocks (files of examples/bad/, an injected full disk, stderr shown with 2>&1)
    are fast blocks: CI checks them, so a line edited by hand fails it."""
    lines = (ROOT / page).read_text().splitlines()
    (block,) = [b for b in docs.parse(ROOT / page)[0] if any(number in line for line in lines[b.start : b.end])]
    copy = tmp_path / "page.md"
    copy.write_text("\n".join(lines[block.start - 1 : block.end + 1]) + "\n")
    assert docs.main(["--check", "--only", str(copy)]) == 0  # what the page shows is what the command prints
    copy.write_text(copy.read_text().replace(number, edited))
    assert docs.main(["--check", "--only", str(copy)]) == 1
    assert f"{copy}:1: {block.cmd}" in capsys.readouterr().out


def test_every_marker_in_the_docs_is_closed_and_runnable():
    blocks = [b for page in docs.pages() for b in docs.parse(page)[0]]
    figures = [f for page in docs.pages() for f in docs.parse(page)[1]]
    assert len(blocks) >= 5 and any(b.slow for b in blocks) and figures
    for b in blocks:
        for part in docs.commands(b.cmd):
            words = [w for w in part.split() if "=" not in w or w.startswith("-")]  # less VAR=value prefixes
            assert words[0] in ("resflow", "python", "torchrun", "wc", "cat"), (
                f"{b.where()}: {part!r} runs neither resflow nor python"
            )
        assert not b.slow or b.small, f"{b.where()}: a slow block names the arguments that make it small"
    for f in figures:
        assert f.target.is_file(), f"{f.target} (from {f.cmd}) is missing"


@pytest.mark.parametrize(
    "block",
    [b for page in docs.pages() for b in docs.parse(page)[0] if b.slow],
    ids=lambda b: b.cmd.split()[1] if b.cmd.startswith("resflow") else b.cmd.split()[-1],
)
def test_slow_blocks_commands_still_run_at_a_small_size(block, tmp_path):
    """The degradation experiment, theory_check and other slow blocks: their command, with the small
    arguments their marker names, runs and prints (CI does not regenerate them)."""
    # exits with the stderr of a command that fails or runs longer than 10 minutes
    shown = docs.transcript(block.cmd, tmp_path, block.small, timeout=600)
    assert len(shown.splitlines()) >= len(docs.commands(block.cmd))
    assert _running_in(tmp_path) == [], "a process the block started is still running"


def _running_in(directory) -> list[int]:
    """The processes whose working directory is `directory` or below it."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(proc.name))
    return found


def test_a_command_that_times_out_or_leaves_a_process_behind_is_stopped_whole(tmp_path, capsys):
    """The block's command and everything it started, however deep, end with it (a torchrun's
    workers, a server): at its timeout, and when it exits leaving something running."""
    sleeper = 'python -c \'import subprocess, time; subprocess.Popen(["sleep", "300"]); time.sleep(300)\''
    start = time.monotonic()
    with pytest.raises(SystemExit, match="did not finish within 2 s"):
        docs.transcript(sleeper, tmp_path, timeout=2)
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert _running_in(tmp_path) == []
    assert docs.transcript("sleep 300 & echo started", tmp_path) == "started\n"  # returns: its output is done
    assert "left processes running: stopped" in capsys.readouterr().err
    time.sleep(0.5)
    assert _running_in(tmp_path) == []


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run_at_a_small_size(example, tmp_path):
    done = subprocess.run(
        docs.argv(f"python examples/{example} --small"),
        cwd=tmp_path,
        env=docs.environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_a_chain_of_commands_shares_a_directory_and_shows_each_command(tmp_path):
    """`A && B`: B sees what A wrote, the block shows `$ B` before B's output; a command that
    fails stops the script unless it shows its stderr (`2>&1`), whose message is then the output."""
    cmd = "resflow theory deep50 --critical && resflow theory deep50 --critical > crit.txt && python -c \"print(open('crit.txt').read().upper())\""
    page = _page(tmp_path, cmd)
    assert docs.main(["--only", str(page)]) == 0
    # the reference: the same command run directly, without the script
    crit = subprocess.run(
        docs.argv("resflow theory deep50 --critical"), env=docs.environment(), capture_output=True, text=True, check=True
    ).stdout
    parts = cmd.split(" && ")
    expected = f"$ {parts[0]}\n{crit}$ {parts[1]}\n$ {parts[2]}\n{crit.upper()}"  # trailing blank line dropped
    assert f"```text\n{expected}```\n<!-- /docs-output -->" in page.read_text()

    error = docs.transcript("resflow run no-such-config 2>&1", tmp_path)
    assert error.startswith("error: ") and "no-such-config" in error and "Traceback" not in error
    with pytest.raises(SystemExit, match="no-such-config"):
        docs.transcript("resflow run no-such-config", tmp_path)


def test_small_arguments_go_to_each_command_like_the_first():
    cmd = "resflow run a --no-plots | tail -2 && resflow run b > /dev/null && resflow export c && python -c 'x'"
    assert docs.commands(cmd, "--seeds 1") == [
        "resflow run a --no-plots --seeds 1 | tail -2",
        "resflow run b --seeds 1 > /dev/null",
        "resflow export c",
        "python -c 'x'",
    ]
    assert docs.commands("python examples/x.py", "--small") == ["python examples/x.py --small"]
