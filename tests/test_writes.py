"""Issue 25, "writes outside resflow's own files": every writer (report --out, export, sweep --resume,
the results-dir lock) replaces only a regular file resflow wrote (or, with --force, one the user names);
never a device, FIFO, socket, link, nor a file of a results dir that is not the writer's own; each
refusal is one line. Each test fails on the code before the fix."""

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from clirunner import Runner

from resflow.cli.app import app

runner = Runner()
S = ["--set", "model.depth=3", "--set", "model.width=8", "--seeds", "1", "--no-plots"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_error(result, code=2):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # (sweep: a plan line first)
    assert result.exit_code == code and len(lines) == 1, (result.exit_code, result.stderr)
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "r"
    assert invoke("run", "deep50", *S, "--out", out).exit_code == 0
    return out


def _snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# report --out


def _fifo(path):
    os.mkfifo(path)
    return path


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


@pytest.mark.parametrize("kind, make", [("a FIFO", _fifo), ("a socket", _socket)])
def test_report_out_never_replaces_a_fifo_or_socket(results, tmp_path, kind, make):
    target = make(tmp_path / "special")
    for force in ([], ["--force"]):
        line = _one_error(invoke("report", results, "--out", target, *force))
        assert kind in line
        mode = os.lstat(target).st_mode
        assert stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)  # still the node it was, not a regular file


def test_report_out_never_replaces_a_device(results, tmp_path):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        pytest.skip("cannot make a device node here")
    line = _one_error(invoke("report", results, "--out", dev, "--force"))
    assert "a device" in line and stat.S_ISCHR(os.lstat(dev).st_mode)


def test_report_out_never_replaces_a_link(results, tmp_path):
    target = tmp_path / "target.html"
    target.write_text("mine")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    line = _one_error(invoke("report", results, "--out", link, "--force"))
    assert "symbolic link" in line
    assert link.is_symlink() and target.read_text() == "mine"


def test_report_out_never_writes_over_a_results_table(results):
    before = _snapshot(results)
    line = _one_error(invoke("report", results, "--out", results / "grads.csv", "--force"))
    assert "results dir" in line
    assert _snapshot(results) == before
    assert invoke("report", results, "--out", results / "report.html").exit_code == 0  # its own file: fine
    assert invoke("report", results).exit_code == 0  # and again: it replaces its own page


def test_report_out_replaces_a_users_file_only_with_force(results, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("my notes")
    line = _one_error(invoke("report", results, "--out", notes))
    assert "--force" in line and notes.read_text() == "my notes"
    assert invoke("report", results, "--out", notes, "--force").exit_code == 0
    assert notes.read_text().startswith("<!DOCTYPE html>")
    page = tmp_path / "share.html"
    assert invoke("report", results, "--out", page).exit_code == 0
    assert invoke("report", results, "--out", page).exit_code == 0  # a page resflow wrote: replaced without --force


def test_report_out_a_directory_or_a_missing_parent_is_one_line(results, tmp_path):
    line = _one_error(invoke("report", results, "--out", tmp_path))
    assert "is a directory" in line
    line = _one_error(invoke("report", results, "--out", tmp_path / "nope" / "r.html"))
    assert "does not exist" in line and not (tmp_path / "nope").exists()


# ---------------------------------------------------------------------------------------------
# export --to tensorboard


def tb(name):  # the export tests skip without tensorboard
    pytest.importorskip(name)


def _events(directory: Path) -> list[Path]:
    return sorted(directory.rglob("events.out.tfevents.*"))


def test_export_force_never_deletes_an_unrelated_tensorboard_run(results, tmp_path):
    tb("tensorboard")
    from resflow.results.tensorboard_events import event, scalar, writer

    logdir = tmp_path / "tb"
    w = writer(logdir / "my_training_run")  # a run of the user's own: event files only
    event(w, 1, [scalar("loss", 0.5)], 0.0)
    w.close()
    mine = _events(logdir)
    assert len(mine) == 1
    before = mine[0].read_bytes()
    line = _one_error(invoke("export", results, logdir, "--to", "tensorboard", "--force"))
    assert "my_training_run" in line
    assert _events(logdir) == mine and mine[0].read_bytes() == before


def test_export_force_replaces_its_own_export_and_only_that(results, tmp_path):
    tb("tensorboard")
    logdir = tmp_path / "tb"
    assert invoke("export", results, logdir, "--to", "tensorboard").exit_code == 0
    first = _events(logdir)
    assert invoke("export", results, logdir, "--to", "tensorboard", "--force").exit_code == 0
    again = _events(logdir)
    assert len(again) == len(first) == 1 and again != first  # replaced, not appended
    # the current directory as LOGDIR: an earlier export there is replaced, the directory stays
    here = tmp_path / "here"
    here.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(here)
        assert invoke("export", results, ".", "--to", "tensorboard").exit_code == 0
        result = invoke("export", results, ".", "--to", "tensorboard", "--force")
        assert result.exit_code == 0, result.output
        assert here.is_dir() and len(_events(here)) == 1
    finally:
        os.chdir(cwd)


def test_export_into_a_symlinked_logdir_is_one_line(results, tmp_path):
    tb("tensorboard")
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "tb"
    link.symlink_to(target)
    for force in ([], ["--force"]):
        line = _one_error(invoke("export", results, link, "--to", "tensorboard", *force))
        assert "symbolic link" in line
    assert link.is_symlink() and os.listdir(target) == []


def test_a_variant_named_dotdot_stays_inside_the_logdir(results, tmp_path):
    tb("tensorboard")
    from resflow.results.files import read_run, write_run

    run = read_run(results)
    for name in ("grads", "params", "summary"):
        getattr(run, name)["variant"] = ".."
    crafted = write_run(run, tmp_path / "crafted")
    box = tmp_path / "box"
    box.mkdir()
    logdir = box / "tb"
    result = invoke("export", crafted, logdir, "--to", "tensorboard")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(box)) == ["tb"]  # nothing beside LOGDIR
    events = _events(logdir)
    assert len(events) == 1 and logdir.resolve() in events[0].resolve().parents


def test_export_never_writes_into_a_results_dir(results):
    tb("tensorboard")
    before = sorted(p.name for p in results.iterdir())
    for dest in (results / "tb", results / "a" / "b"):
        line = _one_error(invoke("export", results, dest, "--to", "tensorboard"))
        assert "inside the results dir" in line
    assert sorted(p.name for p in results.iterdir()) == before


def test_safe_names_are_single_components():
    from resflow.report.export.runs import safe_name

    for bad in ("..", ".", "a/b", "../../etc", "\x1b]0;x\x07", "", ".hidden", "x" * 400, "a\\b"):
        name = safe_name(bad)
        assert "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 200 and all(ord(c) >= 32 for c in name)


# ---------------------------------------------------------------------------------------------
# sweep --resume and points/

SWEEP = ["--over", "model.depth=1,2", "--set", "model.width=8", "--seeds", "1", "--no-plots", "--workers", "1"]


def _interrupted_sweep(out: Path):
    """A sweep dir as a kill leaves it: plan.json and no CSVs."""
    assert invoke("sweep", "deep50", *SWEEP, "--out", out).exit_code == 0
    for p in out.iterdir():
        if p.is_file() and p.name != "plan.json":
            p.unlink()


def test_resume_never_writes_through_a_points_symlink(tmp_path):
    out = tmp_path / "s"
    _interrupted_sweep(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(out / "points")
    (out / "points").symlink_to(elsewhere)
    line = _one_error(invoke("sweep", "deep50", *SWEEP, "--out", out, "--resume"))
    assert "points" in line and "symbolic link" in line
    assert os.listdir(elsewhere) == [] and (out / "points").is_symlink()


def test_resume_with_points_a_regular_file_is_one_line(tmp_path):
    out = tmp_path / "s"
    _interrupted_sweep(out)
    shutil.rmtree(out / "points")
    (out / "points").write_text("not a dir")
    line = _one_error(invoke("sweep", "deep50", *SWEEP, "--out", out, "--resume"))
    assert "points" in line and "a file" in line
    assert (out / "points").read_text() == "not a dir"


# ---------------------------------------------------------------------------------------------
# the lock: nothing left beside --out after a refused full-disk start

NO_ROOM_FOR_THE_LOCK = """
import errno, os, sys
real = os.pwrite
def full(fd, data, offset):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".lock"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, data, offset)
os.pwrite = full
from resflow.cli import main
sys.argv = ["resflow", *sys.argv[1:]]
main()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd")
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_no_empty_lock_file_is_left_after_a_full_disk_start(tmp_path, cli_env, command):
    args = S if command == "run" else SWEEP
    result = subprocess.run(
        [sys.executable, "-c", NO_ROOM_FOR_THE_LOCK, command, "deep50", *args, "--out", str(tmp_path / "r")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and os.strerror(errno.ENOSPC) in errors[0] and "internal error" not in errors[0], result.stderr
    assert os.listdir(tmp_path) == []  # no .r.lock, no results dir
