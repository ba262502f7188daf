"""A local Ray instance goes with the sweep that started it, however that sweep ends.

Ray ties its GCS and raylet to the process that started them (the kernel's parent-death signal), but
not their children: after a `kill -9` of the sweep, `ray::DashboardAgent` and `ray::RuntimeEnvAgent`
live on for about a minute (they try to report the raylet's death to the GCS that died with it).
`Reaper` is a small watchdog process started before `ray.init`: it notes, twice a second, the Ray
processes below the sweep's process, and when the sweep's process is gone (the pipe it holds reads
end-of-file: that happens however it died) or asks it to, it SIGKILLs those still running
(each checked by its start time, so a reused pid is never hit), then exits.

    python -m resflow.executors.reaper PID FD   (started by Reaper; not for use by hand)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

SNAPSHOT_EVERY = 0.5  # seconds


class Reaper:
    """The watchdog of this process's local Ray instance; `close()` ends it (and what is left of Ray)."""

    def __init__(self) -> None:
        read, self._write = os.pipe()  # (not inherited by the Ray processes: only this process holds the write end)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "resflow.executors.reaper", str(os.getpid()), str(read)],
                pass_fds=(read,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # (a Ctrl-C at the terminal is the sweep's to handle, not its)
            )
        finally:
            os.close(read)

    def close(self, timeout: float = 10.0) -> None:
        """Ask the watchdog to kill what is left of Ray and exit; wait for it."""
        if self._write is not None:
            os.close(self._write)
            self._write = None
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a running process, None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _is_ray(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ray" in cmdline


def _descendants(root: int, me: int) -> dict[int, int]:
    """{pid: start time} of the Ray processes below `root` (this watchdog excluded)."""
    children: dict[int, list[int]] = {}
    starts = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info is not None:
            children.setdefault(info[0], []).append(int(entry))
            starts[int(entry)] = info[1]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child != me:
                todo.append(child)
                if _is_ray(child):
                    found[child] = starts[child]
    return found


def watch(parent: int, fd: int) -> None:
    seen: dict[int, int] = {}
    while True:
        ready, _, _ = select.select([fd], [], [], SNAPSHOT_EVERY)
        if ready and not os.read(fd, 64):
            break  # end of file: the sweep's process closed it, or is gone
        seen.update(_descendants(parent, os.getpid()))
    seen.update(_descendants(parent, os.getpid()))  # (the parent may still be there: a close())
    for pid, started in seen.items():
        info = _stat(pid)
        if info is not None and info[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), int(sys.argv[2]))
