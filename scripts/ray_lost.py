"""A Ray cluster lost in the middle of a sweep, for the docs: the line resflow ends with, and --resume.

    python scripts/ray_lost.py [--small]

Starts `resflow sweep deep50 ... --backend ray --workers 1 --out s` (a local Ray instance), waits for
its first finished point, kills the instance's GCS (`gcs_server`) with SIGKILL, and prints what the
sweep printed on stderr, its exit code, how long it took to give up and whether a lock file is left;
then runs the `--resume` command and prints what it printed on stderr (less the progress lines) and
its exit code. `--small`: smaller points, the cluster found lost after 2 s instead of 10.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs, ...)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main() -> int:
    small = "--small" in sys.argv[1:]
    # a quick first point, then points that each take longer than RESFLOW_RAY_LOST_AFTER (10 s;
    # --small: 2 s) plus a second: the sweep is still waiting for one when the cluster is found lost
    depths = "10,1000,1010,1020" if small else "10,3000,3010,3020"
    sweep = ["sweep", "deep50", "--over", f"model.depth={depths}", "--set", "model.width=128", "--seeds", "4"]
    sweep += ["--no-plots", "--backend", "ray", "--workers", "1", "--out", "s"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    prefix = ""
    if small:
        env["RESFLOW_RAY_LOST_AFTER"] = "2"
        prefix = "RESFLOW_RAY_LOST_AFTER=2 "
    resflow = [sys.executable, "-m", "resflow"]
    print(f"$ {prefix}resflow {' '.join(sweep)}    # its GCS killed with SIGKILL after the first point")
    driver = subprocess.Popen([*resflow, *sweep], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(Path("s/points").glob("*.json")):
            if driver.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"ray_lost: the sweep ended or took too long before its first point:\n{driver.stderr.read()}")
            time.sleep(0.2)
        gcs = [p for p in children(driver.pid) if "gcs_server" in cmdline(p)]
        if not gcs:
            sys.exit("ray_lost: found no gcs_server below the sweep")
        for pid in gcs:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        stderr = driver.communicate(timeout=120)[1]
        took = time.monotonic() - killed
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    print(stderr.strip())
    left = "a lock file left" if Path(".s.lock").exists() else "no lock file left"
    print(f"(exit {driver.returncode}, {took:.0f} s after the GCS was killed; {left})")
    if driver.returncode != 1 or "error: lost the Ray cluster" not in stderr:
        sys.exit("ray_lost: the sweep did not end with the lost-cluster line (it finished before it noticed?)")
    print(f"$ {prefix}resflow {' '.join(sweep)} --resume")
    resumed = subprocess.run([*resflow, *sweep, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    print("\n".join(line for line in resumed.stderr.splitlines() if not line.startswith("points ")))
    print(f"(exit {resumed.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
