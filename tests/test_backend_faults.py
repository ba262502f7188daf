"""Issue 25, faults in distributed backends: a Slurm sweep (submitit's local executor: each job a
separate process, as on a node) whose process is killed keeps what its jobs finish, and reports
points as they finish; a local Ray instance goes with a sweep killed with -9. Each test starts and
ends its own processes, bounded in time, and fails on the code before the fix."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TABLES = ("grads.csv", "params.csv", "summary.csv")
SLURM_SWEEP = [
    "sweep",
    "deep50",
    "--over",
    "model.depth=40,41,42,43",
    "--set",
    "model.width=64",
    "--seeds",
    "3",
    "--no-plots",
]


SLOWER = ["--set", "model.width=256", "--set", "data.batch_size=1024"]  # points of ~1 s each: longer than the 0.5 s poll


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_until(condition, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, what
        time.sleep(0.05)


def _kill_all(pids) -> None:
    for pid in pids:
        if _running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def slurm_env(cli_env):
    pytest.importorskip("submitit")
    return {**cli_env, "RESFLOW_SUBMITIT_CLUSTER": "local"}


def test_resume_after_kill_9_collects_what_the_slurm_jobs_finished(tmp_path, resflow_cmd, slurm_env):
    out = tmp_path / "s"
    reference = tmp_path / "reference"
    done = subprocess.run(
        [*resflow_cmd, *SLURM_SWEEP, "--workers", "1", "--out", str(reference)], env=slurm_env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    driver = subprocess.Popen(
        [*resflow_cmd, *SLURM_SWEEP, "--backend", "slurm", "--workers", "2", "--out", str(out)],
        env=slurm_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    jobs = []
    try:
        _wait_until(lambda: len(list((out / "slurm").glob("*_submitted.pkl"))) == 2, 120, "the jobs were not submitted")
        time.sleep(0.3)
        jobs = [p for p in _tree(driver.pid)]
        driver.kill()  # kill -9: the jobs go on without the sweep's process
        driver.wait(timeout=30)
        assert list((out / "points").glob("*.json")) == []  # killed before it saved anything
        _wait_until(lambda: not any(_running(p) for p in jobs), 240, "the jobs did not finish")
    finally:
        _kill_all([driver.pid, *jobs])
    submitted = sorted((out / "slurm").glob("*_submitted.pkl"))
    resumed = subprocess.run(
        [*resflow_cmd, *SLURM_SWEEP, "--backend", "slurm", "--workers", "2", "--out", str(out), "--resume"],
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted((out / "slurm").glob("*_submitted.pkl")) == submitted  # nothing run again: collected
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_slurm_points_are_saved_as_they_finish_not_per_job(tmp_path, resflow_cmd, slurm_env):
    out = tmp_path / "s"
    driver = subprocess.Popen(
        [*resflow_cmd, *SLURM_SWEEP, *SLOWER, "--backend", "slurm", "--workers", "1", "--out", str(out)],
        env=slurm_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen = []  # (point files saved, the one job's result written yet) at each change
    try:
        t0 = time.monotonic()
        while driver.poll() is None:
            assert time.monotonic() - t0 < 300, "the sweep did not finish"
            saved = len(list((out / "points").glob("*.json"))) if (out / "points").is_dir() else 0
            finished = bool(list((out / "slurm").glob("*_result.pkl"))) if (out / "slurm").is_dir() else False
            if not seen or seen[-1] != (saved, finished):
                seen.append((saved, finished))
            time.sleep(0.02)
    finally:
        _kill_all([driver.pid, *_tree(driver.pid)])
    assert driver.returncode == 0, driver.stderr.read()
    early = [saved for saved, finished in seen if not finished and saved > 0]
    assert early and max(early) >= 2, seen  # points saved while their job was still running the rest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_ray_instance_goes_with_a_sweep_killed_with_9(tmp_path, resflow_cmd, cli_env):
    pytest.importorskip("ray")
    env = {k: v for k, v in cli_env.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [
            *resflow_cmd,
            "sweep",
            "deep50",
            "--over",
            "model.depth=100,110,120,130,140,150,160,170",
            "--set",
            "model.width=128",
            "--seeds",
            "4",
            "--no-plots",
            "--backend",
            "ray",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "s"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ray_processes = []
    try:

        def agents_up() -> bool:
            names = [_cmdline(p) for p in _tree(driver.pid)]
            assert driver.poll() is None, "the sweep ended before Ray was up"
            return any("DashboardAgent" in n or "dashboard/agent.py" in n for n in names) and any("raylet" in n for n in names)

        _wait_until(agents_up, 150, "Ray did not start")
        time.sleep(1.0)
        ray_processes = [p for p in _tree(driver.pid) if _running(p)]
        driver.kill()
        driver.wait(timeout=30)
        t0 = time.monotonic()
        _wait_until(
            lambda: not any(_running(p) for p in ray_processes),
            15,
            f"Ray outlived the sweep: {[_cmdline(p)[:60] for p in ray_processes if _running(p)]}",
        )
        assert time.monotonic() - t0 < 15
    finally:
        _kill_all([driver.pid, *ray_processes])
