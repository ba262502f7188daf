"""Where sweep points run: in this process, in a pool of local worker processes, or as Ray tasks.

`execute(points, task, save, workers=N, backend="local"|"ray")` runs `task(point) -> text` for every
point (the executor is given its task, it imports none) and calls `save(point, text)` in this process as
each point finishes, in completion order (the sweep sorts by point index when it assembles the CSVs).

local  workers == 1: in this process. workers > 1: a `ProcessPoolExecutor` of persistent workers
       (forked where the platform allows and this process runs no other thread, so torch is already
       imported; from a threaded process, a Jupyter kernel say, where a fork can deadlock, forked by
       a fresh forkserver that imported torch once: `start_method`), each with one torch thread and
       SIGINT ignored, so Ctrl-C reaches only this process, which stops the pool and loses only the
       points in flight.
ray    Ray tasks (imported only here, only when asked for): an existing cluster when `ray_address` or
       RAY_ADDRESS is given, else a local one with `workers` CPUs. A point that raises is a failed point
       there too (its error comes back with the task's other points).
Every point runs with one torch thread, so its numbers are the same whichever backend ran it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable

from resflow._sys.locks import pid_alive
from resflow.errors import ConfigError, ResflowError
from resflow.executors.worker_setup import error_text, versions, worker_process

BACKENDS = ("local", "ray", "slurm")  # slurm: resflow/executors/slurm.py (submitit)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


NEEDS_RAY = '--backend ray needs Ray: pip install "resflow[ray]" (or pip install ray)'


def _unknown_backend(backend: str) -> ConfigError:
    return ConfigError(f"--backend {backend!r}: unknown backend (allowed: {', '.join(BACKENDS)})")


def check_backend(points: list, backend: str) -> None:
    """Refuse, before anything is written, what `execute` would only find out later: Ray not installed,
    an unknown backend."""
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(NEEDS_RAY)
        return  # (a cluster's nodes may have GPUs this machine lacks)
    if backend == "slurm":
        from resflow.executors import slurm

        return slurm.check()  # (the nodes may have GPUs this machine lacks)
    if backend != "local":
        raise _unknown_backend(backend)


def execute(
    points: list,
    task: Callable,
    save: Callable,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    fail: Callable | None = None,
    out=None,
    slurm_options: dict | None = None,
) -> None:
    """`fail(point, error_text)`, if given, records a point that raised and the others go on.
    `out` (the results dir) and `slurm_options`: for backend slurm (resflow/executors/slurm.py)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if backend == "ray":
        return _ray(points, task, save, workers, ray_address, fail)
    if backend == "slurm":
        from resflow.executors import slurm

        return slurm.execute(points, task, save, workers, out, slurm_options, fail)
    if backend != "local":
        raise _unknown_backend(backend)
    if workers == 1 or len(points) == 1:
        return _in_process(points, task, save, fail)
    return _pool(points, task, save, min(workers, len(points)), fail)


@contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _in_process(points, task, save, fail=None) -> None:
    with one_torch_thread():
        for point in points:
            try:
                text = task(point)
            except Exception as err:  # noqa: BLE001 - one bad point must not sink the sweep
                if fail is None:
                    raise
                fail(point, error_text(err))
                continue
            save(point, text)


def die_with(main: int) -> None:
    """End this worker when process `main` (the sweep's, which started the pool) ends, however it ends,
    so a `kill -9` of it leaves no orphan: the kernel's PR_SET_PDEATHSIG where `main` is the parent
    (fork, spawn), and in every case a daemon thread waiting on `main` (a pidfd, else a poll each
    second): a forkserver's workers are the server's children, and the server itself waits for them."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux") and os.getppid() == main:
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if not pid_alive(main):  # gone before we got here
        os._exit(1)
    threading.Thread(target=_exit_when_gone, args=(main,), name="resflow-watch-parent", daemon=True).start()


def _exit_when_gone(main: int) -> None:
    import select
    import signal
    import time

    try:
        fd = os.pidfd_open(main)  # readable once `main` has exited (Linux 5.3+)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while pid_alive(main):
            time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # at once: no cleanup of a point nobody will collect


def _init_worker(main: int | None = None) -> None:
    """`main`: the pid of the process that started the pool."""
    import signal

    if main is not None:
        die_with(main)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    for name in ("SIGTERM", "SIGHUP"):  # not the parent's handler (inherited by fork): terminate() must end us
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    worker_process()


START_METHODS = ("fork", "forkserver", "spawn")


def start_method() -> str:
    """How the local pool starts its workers: RESFLOW_START_METHOD if set; else fork when it is
    safe, i.e. no thread but this one runs (Rich's progress-bar refresh thread and resflow's own
    progress heartbeat, "resflow-progress", aside: the workers never draw), else forkserver, else spawn (Windows, where neither exists)."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    asked = os.environ.get("RESFLOW_START_METHOD")
    if asked:
        if asked not in START_METHODS or asked not in methods:
            raise ConfigError(
                f"RESFLOW_START_METHOD={asked!r}: not a start method here (allowed: "
                f"{', '.join(m for m in START_METHODS if m in methods)})"
            )
        return asked
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if "fork" in methods and all(type(t).__name__ == "_RefreshThread" or t.name == "resflow-progress" for t in others):
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _start_forkserver(context) -> None:
    """Start the forkserver (once per process) with torch imported, so each worker is forked with it
    loaded, and with this process's sys.path (Python before 3.13 starts it without:
    a notebook in a source checkout, cwd on sys.path, would import no resflow there)."""
    import sys
    from multiprocessing import forkserver

    context.set_forkserver_preload(["torch"])  # (the task's own modules load in each worker, on its first point)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _pool(points, task, save, workers: int, fail=None) -> None:
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from resflow._sys.allocator import release_free_memory

    method = start_method()
    ours_before = {child.pid for child in multiprocessing.active_children()}  # the pool's are the others
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        _start_forkserver(context)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    frozen = gc.get_freeze_count()
    try:
        # Longest first: the big points start early and the small ones fill the gaps at the end,
        # so no worker sits idle while another finishes a big point it took last (LPT scheduling).
        by_cost = sorted(points, key=lambda p: getattr(p, "cost", 0.0), reverse=True)
        gc.freeze()  # the workers, forked at the first submit, leave the parent's objects alone (resflow._sys.allocator)
        release_free_memory()  # ... and start from fresh pages, not copies of the parent's free ones
        try:
            pending = {executor.submit(task, p): p for p in by_cost}
        finally:
            if not frozen:  # (the CLI froze its imports itself and keeps them so)
                gc.unfreeze()  # the parent's own collector as it was
        # as_completed: one waiter on every future, each as it completes (a `wait(pending,
        # FIRST_COMPLETED)` per completion walks every pending future: quadratic in the points)
        for future in as_completed(pending):
            point = pending.pop(future)
            err = future.exception()
            if err is None:
                save(point, future.result())
            elif fail is not None and isinstance(err, Exception) and not isinstance(err, BrokenProcessPool):
                fail(point, error_text(err))
            else:
                raise err
    except BrokenProcessPool:
        _stop(executor, ours_before)
        fault = ResflowError(
            "a sweep worker process died (killed, or out of memory?); finished points are saved: rerun with --resume"
        )
        fault.resumable = True
        raise fault from None
    except BaseException:
        _stop(executor, ours_before)
        raise
    executor.shutdown(wait=True)


def _stop(executor, ours_before: set[int]) -> None:
    """Cancel what has not started and end the workers now (in-flight points are lost): the pool's
    processes are this process's children that were not there before it (multiprocessing's public
    `active_children`; the executor has no public terminate before Python 3.14)."""
    import multiprocessing

    for proc in multiprocessing.active_children():
        if proc.pid not in ours_before and proc.is_alive():
            proc.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Ray


def _ray_task(task, points):
    """(point, text, None) for each point that ran, (point, None, error) for one that raised."""
    worker_process()
    out = []
    for point in points:
        try:
            out.append((point, task(point), None))
        except Exception as err:  # noqa: BLE001 - recorded as a failed point, as the local pool does
            out.append((point, None, error_text(err)))
    return out


RAY_CONNECT_TIMEOUT = 30.0  # seconds to reach a cluster (or start a local one); RESFLOW_RAY_TIMEOUT overrides
RAY_LOST_AFTER = 10.0  # seconds without reaching the cluster's GCS while tasks run: the cluster is lost


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{name}={os.environ[name]!r}: expected a positive number of seconds")
    return value


def _host_port(address: str) -> tuple[str, int] | None:
    """The TCP endpoint of a Ray address (`host:port`, `ray://host[:port]`), or None (`auto`, `local`)."""
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    if not rest or rest in ("auto", "local") or "://" in rest:
        return None
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if client else "6379"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT (or ray://HOST:PORT, or auto)") from None


def _reachable(endpoint: tuple[str, int], timeout: float) -> str | None:
    """None if a TCP connection to `endpoint` opens within `timeout`, else why not."""
    import socket

    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return (err.strerror or str(err)).lower()


def _call_within(fn, seconds: float):
    """fn() in a daemon thread, waited for at most `seconds` with this thread free to take signals
    (Ray's connect blocks in C++, where a SIGTERM would wait); TimeoutError if it is not done by then."""
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    thread = threading.Thread(target=target, name="resflow-ray-connect", daemon=True)
    thread.start()
    thread.join(seconds)  # (interruptible: Ctrl-C/SIGTERM raise here)
    if thread.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _Started:
    """What connect_ray returns when it connected (truthy): for disconnect_ray, the watchdog that
    ends a local instance with this process (resflow/executors/reaper.py), if it started one."""

    def __init__(self, reaper=None):
        self.reaper = reaper


def _reaper():
    import sys

    if not sys.platform.startswith("linux"):  # (it reads /proc)
        return None
    from resflow.executors.reaper import Reaper

    try:
        return Reaper()
    except OSError:
        return None


def connect_ray(workers: int, ray_address: str | None):
    """Reach the Ray cluster (`ray_address`, else RAY_ADDRESS, else a local one with `workers` CPUs)
    in bounded time, before anything is written; truthy if this call connected (so it should shut
    down: pass it to disconnect_ray). An address that refuses or does not answer is a one-line
    ResflowError. A local instance started here is watched so that it ends with this process, even
    after a kill -9 (resflow/executors/reaper.py)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(NEEDS_RAY) from None
    if ray.is_initialized():
        return False
    address = ray_address or os.environ.get("RAY_ADDRESS")
    where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
    timeout = _seconds("RESFLOW_RAY_TIMEOUT", RAY_CONNECT_TIMEOUT)
    endpoint = _host_port(address) if address else None
    if endpoint is not None:
        why = _reachable(endpoint, min(timeout, 5.0))
        if why is not None:
            raise ResflowError(f"cannot reach {where}: {why}; nothing was written")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    started = _Started(None if address else _reaper())
    try:
        _init_ray(ray, address, workers, kwargs, timeout, where)
    except BaseException:
        if started.reaper is not None:
            started.reaper.close()  # what did start of a local instance goes with the failed start
        raise
    return started


def _init_ray(ray, address, workers: int, kwargs: dict, timeout: float, where: str) -> None:
    try:
        if address:  # connecting only: in a thread, so that this one stays free to take a signal
            _call_within(lambda: ray.init(address=address, **kwargs), timeout)
        else:  # starting a local instance: here (Ray ties its processes' lives to the thread that starts them)
            ray.init(num_cpus=workers, **kwargs)
    except TimeoutError:
        raise ResflowError(
            f"cannot reach {where}: no answer within {timeout:g} s (RESFLOW_RAY_TIMEOUT sets the limit); nothing was written"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ResflowError(f"cannot start or reach {where}: {ray_cause(err)}; nothing was written") from None
    except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception when its local processes cannot start
        if address:
            raise ResflowError(f"cannot reach {where}: {ray_cause(err)}; nothing was written") from None
        disconnect_ray()  # what did start (a GCS, a raylet) goes with the failed start
        raise ResflowError(
            f"cannot start {where}: {ray_cause(err)} (a memory limit, ulimit -v, is a common cause: Ray's "
            f"processes reserve gigabytes of address space); nothing was written"
        ) from None


CAUSE_WORDS = ("auth", "token", "unauthenticated", "permission", "denied", "version mismatch")


def ray_cause(err: BaseException) -> str:
    """The real reason behind Ray's connection error, in one line: Ray wraps it ("Failed to
    connect ..."), so the innermost exception of the chain is named, and a line of any message in
    the chain that names an authentication, permission or version problem is preferred."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for exc in reversed(chain):
        for line in str(exc).splitlines():
            if any(word in line.lower() for word in CAUSE_WORDS):
                return f"{type(exc).__name__}: {line.strip()}"[:300]
    inner = chain[-1]
    first = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
    outer = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if inner is err:
        return f"{type(err).__name__}: {first}"[:300] if first else type(err).__name__
    return f"{outer} (cause: {type(inner).__name__}: {first})"[:300]


def disconnect_ray(started=None) -> None:
    """ray.shutdown(), waited for a few seconds at most (a lost cluster can keep it waiting); then
    the watchdog of a local instance `started` by connect_ray ends what is left of it."""
    import ray

    try:
        _call_within(ray.shutdown, 10.0)
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    finally:
        reaper = getattr(started, "reaper", None)
        if reaper is not None:
            reaper.close()


@contextmanager
def connected(backend: str, workers: int, ray_address: str | None = None):
    """Within: the backend's cluster is reached (Ray: connected first, in bounded time, so that a
    caller creates its files only once it is); disconnected after. A no-op for the local backend."""
    started = backend == "ray" and connect_ray(workers, ray_address)
    if not started:
        yield
        return
    try:
        yield
    finally:
        disconnect_ray(started)


def _gcs_endpoint():
    import ray

    try:
        return _host_port(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - (Ray Client mode, an older Ray): no watch
        return None


def _ray(points, task, save, workers: int, ray_address: str | None, fail: Callable | None = None) -> dict:
    """Run the points as Ray tasks; returns a worker's versions (resflow, torch, Python, host)."""
    import time

    started_here = connect_ray(workers, ray_address)
    import ray

    worker_versions = None
    remote = ray.remote(num_cpus=1)(_ray_task)
    size = max(1, min(16, len(points) // (4 * workers)))  # a few points per task: fewer round trips
    refs = {}
    gcs = _gcs_endpoint()
    lost_after = _seconds("RESFLOW_RAY_LOST_AFTER", RAY_LOST_AFTER)
    unreachable_since = None
    try:
        worker_versions = ray.get(ray.remote(num_cpus=1)(versions).remote())
        for i in range(0, len(points), size):
            refs[remote.remote(task, points[i : i + size])] = True
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)  # (back here every second: signals, the watch)
            if not ready and gcs is not None:
                if _reachable(gcs, 1.0) is None:
                    unreachable_since = None
                elif unreachable_since is None:
                    unreachable_since = time.monotonic()
                elif time.monotonic() - unreachable_since > lost_after:
                    err = ResflowError(
                        f"lost the Ray cluster (its GCS at {gcs[0]}:{gcs[1]} has not answered for "
                        f"{lost_after:g} s); finished points are saved: rerun with --resume"
                    )
                    err.resumable = True
                    raise err
            for ref in ready:
                refs.pop(ref)
                for point, text, error in ray.get(ref):
                    if error is None:
                        save(point, text)
                    elif fail is not None:
                        fail(point, error)
                    else:
                        raise ResflowError(f"sweep point {point.variant} failed: {error}")
    except BaseException as err:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a lost cluster cannot cancel
                pass
        if isinstance(err, ray.exceptions.RayError):  # a worker died or the cluster went away, not a point's own error
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            fault = ResflowError(
                f"a Ray task failed ({type(err).__name__}: {first}); finished points are saved: rerun with --resume"
            )
            fault.resumable = True
            raise fault from None
        raise
    finally:
        if started_here:
            disconnect_ray(started_here)
    return worker_versions
