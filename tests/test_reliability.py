"""Issue 21, reliability round two: each test reproduces one of its defects through the real CLI in a
subprocess (kill -9, a planted symlink, /dev/zero, a full disk, a dead Ray address) and fails on the
code before the fix."""

import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from resflow._sys.locks import lock_path

S = ["--set", "model.depth=3", "--set", "model.width=8", "--seeds", "1", "--no-plots"]
SMALL_SWEEP = [
    "--over",
    "model.depth=1,2,3",
    "--set",
    "model.width=8",
    "--set",
    "data.batch_size=4",
    "--seeds",
    "2",
    "--no-plots",
    "--workers",
    "1",
]
CSVS = ("grads.csv", "params.csv", "summary.csv")


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _errors(text):
    return [line for line in _lines(text) if line.startswith("error: ")]


def _limit_memory():  # so that an unbounded read fails in the child instead of exhausting the host
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def cli(resflow_cmd, cli_env, *args, cwd=None, timeout=120, **kw):
    return subprocess.run(
        [*resflow_cmd, *map(str, args)], env=cli_env, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw
    )


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_until(condition, timeout, what):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, what
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# 1. kill -9 leaves no orphans; a dead owner's lock is taken over


def _descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("method, processes", [("fork", 2), ("forkserver", 4)])  # forkserver: + server, tracker
def test_kill_9_of_a_sweep_ends_its_workers_and_resume_is_not_refused(tmp_path, resflow_cmd, cli_env, method, processes):
    out = tmp_path / "k"
    args = [
        "sweep",
        "deep50",
        "--over",
        "model.depth=300,400,500,600,700,800",
        "--set",
        "model.width=64",
        "--set",
        "data.batch_size=16",
        "--seeds",
        "2",
        "--no-plots",
        "--workers",
        "2",
        "--out",
        out,
    ]
    proc = subprocess.Popen(
        [*resflow_cmd, *map(str, args)],
        env={**cli_env, "RESFLOW_START_METHOD": method},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: len(_descendants(proc.pid)) >= processes or proc.poll() is not None, 120, "no workers started")
        time.sleep(1.0)
        workers = _descendants(proc.pid)
        assert proc.poll() is None, "the sweep finished before it could be killed: make its points bigger"
        proc.kill()  # kill -9 of the main process only
        proc.wait()
        _wait_until(lambda: not any(_running(p) for p in workers), 15, f"orphaned workers still run: {workers}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    resumed = cli(resflow_cmd, cli_env, *args, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "being written by another" not in resumed.stderr
    assert (out / "summary.csv").is_file() and not lock_path(out).exists()


HOLDER_WITH_CHILD = """
import os, sys, time
from resflow._sys.locks import results_lock, lock_path
with results_lock(sys.argv[1]):
    target = str(lock_path(sys.argv[1]))
    fd = next(int(f) for f in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{f}") == target)
    keep = os.dup(fd)  # a descriptor of the lock that a child keeps, as a leaked or inherited one would
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_lock_whose_owner_is_dead_is_taken_over_even_if_its_child_holds_it(tmp_path, resflow_cmd, cli_env):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER_WITH_CHILD, str(out)], env=cli_env, stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        refused = cli(resflow_cmd, cli_env, "run", "deep50", *S, "--out", out)
        assert refused.returncode == 1 and f"pid {holder.pid}" in refused.stderr  # the owner lives: refused
        holder.kill()
        holder.wait()
        assert _running(child)  # its child still holds the flock
        result = cli(resflow_cmd, cli_env, "run", "deep50", *S, "--out", out)
        assert result.returncode == 0, result.stderr
        assert "took over a stale lock" in result.stderr and f"pid {holder.pid}" in result.stderr
        assert (out / "grads.csv").is_file() and not lock_path(out).exists()
    finally:
        os.kill(child, signal.SIGKILL)
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_forked_child_does_not_hold_the_lock(tmp_path):
    """The lock's descriptor is closed in every process forked while it is held (pool workers, the
    params.csv helper): a child that outlives its parent cannot keep the dir locked."""
    import fcntl

    from resflow._sys.locks import results_lock

    out = tmp_path / "out"
    with results_lock(out):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: is any of its descriptors the lock file?
            target = str(lock_path(out))
            held = any(os.path.realpath(f"/proc/self/fd/{f}") == target for f in os.listdir("/proc/self/fd"))
            os.write(write, b"1" if held else b"0")
            os._exit(0)
        os.close(write)
        held = os.read(read, 1)
        os.waitpid(pid, 0)
        os.close(read)
        assert held == b"0"
        fd = os.open(lock_path(out), os.O_RDWR)
        try:  # and the parent still holds it
            with pytest.raises(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# 2. a symlinked lock, and temp files, are never written through


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(tmp_path, resflow_cmd, cli_env, dangling):
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("precious\n")
    (tmp_path / ".sl.lock").symlink_to(victim)
    result = cli(resflow_cmd, cli_env, "run", "deep50", *S, "--out", "sl", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(_lines(result.stderr)) == 1 and "symbolic link" in result.stderr, result.stderr
    if dangling:
        assert not victim.exists()  # the link's target was not created
    else:
        assert victim.read_text() == "precious\n"
    assert not (tmp_path / "sl").exists() and (tmp_path / ".sl.lock").is_symlink()


def test_a_temp_file_swapped_for_a_link_is_not_written_through(tmp_path, monkeypatch):
    """Another process replacing a temp file by a link to a victim between its creation and its use:
    the write goes through the descriptor, and the swap is refused instead of renamed into place."""
    import tempfile

    from resflow._sys.files import write_text_atomic
    from resflow.errors import ResflowError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    real = tempfile.mkstemp

    def swapped(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.unlink(name)
        os.symlink(victim, name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", swapped)
    with pytest.raises(ResflowError, match="replaced by another process"):
        write_text_atomic(tmp_path / "out.txt", "attack\n")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "out.txt").exists()


# ---------------------------------------------------------------------------------------------
# 3. a config is a bounded regular file


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "big"])
def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path, resflow_cmd, cli_env, kind):
    if kind == "fifo":
        path = tmp_path / "c.yaml"
        os.mkfifo(path)  # opened for reading, it would wait for a writer forever
    elif kind == "big":
        path = tmp_path / "big.yaml"
        path.write_text("# " + "x" * (5 << 20) + "\nmodel: {depth: 3, width: 8}\n")
    else:
        path = Path(kind)
    result = cli(resflow_cmd, cli_env, "run", path, *S, "--out", tmp_path / "out", timeout=60, preexec_fn=_limit_memory)
    assert result.returncode == 2, result.stderr[-500:]
    lines = _lines(result.stderr)
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert ("not a regular file" if kind != "big" else "too large for a config") in lines[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# 4. Ray: connect first, in bounded time; SIGTERM honoured


def test_a_dead_ray_address_fails_fast_and_creates_nothing(tmp_path, resflow_cmd, cli_env):
    pytest.importorskip("ray")
    out = tmp_path / "r"
    t0 = time.monotonic()
    result = cli(
        resflow_cmd,
        cli_env,
        "sweep",
        "deep50",
        *SMALL_SWEEP,
        "--backend",
        "ray",
        "--ray-address",
        "127.0.0.1:1",
        "--out",
        out,
        timeout=90,
    )
    assert time.monotonic() - t0 < 60
    assert result.returncode == 1, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "127.0.0.1:1" in errors[0] and "cannot reach" in errors[0], result.stderr
    assert sorted(os.listdir(tmp_path)) == []  # no plan.json, no points/, no lock


def test_sigterm_while_connecting_to_ray_is_honoured_within_seconds(tmp_path, resflow_cmd, cli_env):
    """An address that accepts TCP connections but never answers (Ray's connect waits in C++):
    SIGTERM still stops the command at once, and nothing was created."""
    pytest.importorskip("ray")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    out = tmp_path / "r"
    cmd = [
        *resflow_cmd,
        "sweep",
        "deep50",
        *SMALL_SWEEP,
        "--backend",
        "ray",
        "--ray-address",
        f"127.0.0.1:{server.getsockname()[1]}",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # imports done, connecting
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert not out.exists() and not lock_path(out).exists()


# ---------------------------------------------------------------------------------------------
# 5. what was written is recorded and verified


def _run(resflow_cmd, cli_env, out, *extra):
    result = cli(resflow_cmd, cli_env, "run", "deep50", *S, *extra, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda d: (d / "grads.csv").write_text("".join((d / "grads.csv").read_text().splitlines(True)[:2])), "grads.csv"),
        (lambda d: (d / "summary.csv").write_bytes((d / "summary.csv").read_bytes()[:-30]), "summary.csv"),
        (
            lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("depth: 3", "depth: 999")),
            "config.yaml",
        ),
        (lambda d: (d / "params.csv").unlink(), "params.csv"),
    ],
)
@pytest.mark.parametrize("command", ["show", "plot"])
def test_an_edited_or_truncated_results_file_is_refused_naming_it(tmp_path, resflow_cmd, cli_env, damage, named, command):
    out = _run(resflow_cmd, cli_env, tmp_path / "r")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["files"]["grads.csv"]["rows"] == len(pd.read_csv(out / "grads.csv"))  # what was recorded
    damage(out)
    result = cli(resflow_cmd, cli_env, command, out)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, lines


def test_a_garbage_row_in_a_results_dir_without_records_is_one_line(tmp_path, resflow_cmd, cli_env):
    out = _run(resflow_cmd, cli_env, tmp_path / "r")
    meta = json.loads((out / "meta.json").read_text())
    del meta["files"]  # a results dir written before the records existed
    (out / "meta.json").write_text(json.dumps(meta))
    with open(out / "grads.csv", "a") as fh:
        fh.write("garbage,,,zzz\n")
    for command in ("plot", "show"):
        result = cli(resflow_cmd, cli_env, command, out)
        assert result.returncode == 2, result.stderr
        lines = _lines(result.stderr)
        assert len(lines) == 1 and "grads.csv" in lines[0] and "line 5" in lines[0], lines


def test_a_damaged_point_file_is_run_again_on_resume(tmp_path, resflow_cmd, cli_env):
    full = tmp_path / "full"
    done = cli(resflow_cmd, cli_env, "sweep", "deep50", *SMALL_SWEEP, "--out", full)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s"
    shutil.copytree(full, out)
    for name in (*CSVS, "meta.json", "config.yaml"):  # as a sweep stopped before its CSVs
        (out / name).unlink()
    points = sorted((out / "points").glob("*.json"))
    points[1].write_bytes(os.urandom(300))
    points[2].write_text(points[2].read_text()[:-40])  # truncated
    result = cli(resflow_cmd, cli_env, "sweep", "deep50", *SMALL_SWEEP, "--out", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "2 point file(s)" in result.stderr and "damaged" in result.stderr and "run again" in result.stderr
    assert "1 of 3 points already finished" in result.stderr or "1 of 3" in result.stderr
    for name in CSVS:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    for a, b in zip(points, sorted((full / "points").glob("*.json"))):
        assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------------------------------------
# 6. a full disk or a name too long: the environment, one line, nothing partial

FULL_DISK = """
import errno, os, sys
import resflow._sys.files as files
real = files.write_all
def full(fd, data):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    if name.startswith("." + os.environ["FAIL_AT"]):
        if os.environ.get("FAIL_AFTER_ONE") and not os.path.exists(os.environ["FAIL_AFTER_ONE"]):
            open(os.environ["FAIL_AFTER_ONE"], "w").close()
        else:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real(fd, data)
files.write_all = full
from resflow.cli import main
sys.argv = ["resflow", *sys.argv[1:]]
main()
"""


def test_a_full_disk_during_a_run_is_one_line_and_leaves_nothing(tmp_path, cli_env):
    env = {**cli_env, "FAIL_AT": "params.csv"}
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "run", "deep50", *S, "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "params.csv" in lines[0] and "No space left on device" in lines[0], lines
    assert "internal error" not in result.stderr
    assert os.listdir(tmp_path) == []  # no results dir, no staging dir, no lock


def test_a_full_disk_during_a_sweep_says_how_to_resume(tmp_path, cli_env, resflow_cmd):
    out = tmp_path / "s"
    # point files (.00000-<hash>.json.*.tmp): the first is written, the next one finds the disk full
    env = {**cli_env, "FAIL_AT": "0000", "FAIL_AFTER_ONE": str(tmp_path / "one-written")}
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "sweep", "deep50", *SMALL_SWEEP, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "No space left on device" in errors[0] and "--resume" in errors[0], result.stderr
    assert "internal error" not in result.stderr
    resumed = cli(resflow_cmd, cli_env, "sweep", "deep50", *SMALL_SWEEP, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "summary.csv").is_file()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs here (unshare)")
def test_a_real_full_disk_on_a_small_tmpfs(tmp_path, cli_env):
    """A 48 KiB tmpfs (in a private mount namespace) that the run's CSVs do not fit in."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=48k tmpfs {disk} && "
        f"{sys.executable} -m resflow run deep50 --set model.depth=300 --set model.width=8 --seeds 2 --no-plots "
        f"--out {disk}/r; echo rc=$?; ls -A {disk}"
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "rc=1" in result.stdout, result.stdout + result.stderr
    assert result.stdout.strip().endswith("rc=1")  # and `ls -A` of the disk printed nothing: nothing left
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0] and f"{disk}/r" in lines[0], lines


def test_an_output_name_too_long_is_one_line_and_creates_nothing(tmp_path, resflow_cmd, cli_env):
    result = cli(resflow_cmd, cli_env, "run", "deep50", *S, "--out", "results/" + "x" * 300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "too long" in lines[0] and "internal error" not in lines[0], lines
    config = tmp_path / "c.yaml"
    config.write_text(f"name: {'n' * 250}\nmodel: {{depth: 3, width: 8}}\n")
    result = cli(resflow_cmd, cli_env, "run", config, "--no-plots", cwd=tmp_path)
    assert result.returncode == 2 and "too long" in result.stderr, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]  # no empty results/ left


def test_environment_errors_are_told_from_bugs():
    from resflow.errors import environment_error

    assert "No space left" in str(environment_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/y")))
    assert "'/x/y'" in str(environment_error(OSError(errno.ENOSPC, "No space left on device", "/x/y")))
    assert environment_error(OSError(errno.EBADF, "Bad file descriptor")) is None  # that one is a bug


# ---------------------------------------------------------------------------------------------
# 7. --out through a symlink: refused, the link untouched


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("dangling", [False, True])
def test_an_out_that_is_a_symlink_is_refused_and_left_alone(tmp_path, resflow_cmd, cli_env, command, dangling):
    target = tmp_path / "target"
    if not dangling:
        target.mkdir()
    (tmp_path / "keep").mkdir()
    link = tmp_path / "keep" / "link"
    link.symlink_to(target)
    args = [*S] if command == "run" else [*SMALL_SWEEP]
    result = cli(resflow_cmd, cli_env, command, "deep50", *args, "--out", link)
    assert result.returncode == 2, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "symbolic link" in errors[0], result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert os.listdir(tmp_path / "keep") == ["link"]
    assert dangling or os.listdir(target) == []


# ---------------------------------------------------------------------------------------------
# 8-10. the small ones


def test_an_axis_given_twice_is_an_error(tmp_path, resflow_cmd, cli_env):
    result = cli(
        resflow_cmd, cli_env, "sweep", "deep50", "--over", "model.depth=3,4", "--over", "model.depth=5,6", "--out", tmp_path / "s"
    )
    assert result.returncode == 2, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "model.depth" in lines[0] and "twice" in lines[0], lines
    assert not (tmp_path / "s").exists()


def test_exactly_zero_gradients_are_finite_everywhere(tmp_path, resflow_cmd, cli_env):
    """tanh at init.scale 1e30 saturates every unit: the gradients are exactly 0 (finite). The table's
    flags, summary.csv's `finite` and the theory line must all say so."""
    out = tmp_path / "z"
    result = cli(resflow_cmd, cli_env, "run", "deep50", *S, "--set", "model.init.scale=1e30", "--out", out)
    assert result.returncode == 0, result.stderr
    grads = pd.read_csv(out / "grads.csv")
    assert (grads["input_grad_norm"] == 0).all()  # the premise: every gradient is exactly zero
    assert pd.read_csv(out / "summary.csv")["finite"].all()
    assert "non-finite" not in result.stdout and "no gradient" in result.stdout
    theory = [line for line in result.stdout.splitlines() if line.startswith("theory")]
    assert theory and "nan" not in " ".join(theory)
    shown = cli(resflow_cmd, cli_env, "show", out)
    assert shown.returncode == 0 and "non-finite" not in shown.stdout


def test_a_staging_dir_left_by_a_killed_run_is_cleaned_up(tmp_path, resflow_cmd, cli_env):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is no longer running
    stale = tmp_path / f".rk.staging-{dead.pid}-abcd1234"
    stale.mkdir()
    (stale / "grads.csv").write_text("half\n")
    _run(resflow_cmd, cli_env, tmp_path / "rk")
    _run(resflow_cmd, cli_env, tmp_path / "rk", "--force")
    assert sorted(os.listdir(tmp_path)) == ["rk"]


def test_theory_of_a_transformer_names_its_blocks(resflow_cmd, cli_env):
    result = cli(resflow_cmd, cli_env, "theory", "microgpt")
    assert result.returncode == 0, result.stderr
    assert "None" not in result.stdout.splitlines()[0] and "transformer" in result.stdout.splitlines()[0]


def test_seeds_past_the_largest_seed_are_refused(resflow_cmd, cli_env):
    result = cli(resflow_cmd, cli_env, "theory", "deep50", "--set", f"seed={2**63 - 1}", "--set", "seeds=2")
    assert result.returncode == 2 and "largest seed" in result.stderr, result.stderr
    ok = cli(resflow_cmd, cli_env, "theory", "deep50", "--set", f"seed={2**63 - 2}", "--set", "seeds=2")
    assert ok.returncode == 0, ok.stderr
