"""`--backend slurm`: sweep points as Slurm jobs, through submitit (what academic clusters run).

The points are split into `workers` jobs (one job array); each job runs its points one after the
other with one torch thread, exactly as a local worker does, and leaves each point's file text in
`<out>/slurm/done/` as it finishes it, which this process saves as a point file at once: the same
point files, the same --resume, and CSVs byte-identical to a local sweep's. If this process is
lost (kill -9, a dropped login session), the jobs go on, and --resume collects what they finished. resflow must be importable on the nodes
(the same environment on a shared file system, or the cluster image).

Job logs and submitit's pickles go to `<out>/slurm/`. `--slurm KEY=VALUE` sets a job parameter:
submitit's generic ones (timeout_min, mem_gb, cpus_per_task, gpus_per_node, nodes, name) as they
are, anything else as a Slurm option (partition=gpu -> slurm_partition, account=..., qos=...).
RESFLOW_SUBMITIT_CLUSTER=local runs the jobs as local processes (submitit's local executor: what
the tests use); =debug in this process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from resflow.errors import ConfigError, ResflowError

NEEDS_SUBMITIT = '--backend slurm needs submitit: pip install "resflow[slurm]" (or pip install submitit)'
GENERIC = {"timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node", "name", "stderr_to_stdout"}
DEFAULTS = {"timeout_min": 60, "cpus_per_task": 1, "name": "resflow-sweep"}
LOGS = "slurm"  # inside the results dir


CLUSTERS = ("slurm", "local", "debug")  # RESFLOW_SUBMITIT_CLUSTER: submitit's executors resflow runs on
TYPES = {  # submitit's generic parameters and the type it asserts for each
    "timeout_min": (int, "an integer"),
    "mem_gb": ((int, float), "a number"),
    "nodes": (int, "an integer"),
    "cpus_per_task": (int, "an integer"),
    "gpus_per_node": (int, "an integer"),
    "tasks_per_node": (int, "an integer"),
    "name": (str, "text"),
    "stderr_to_stdout": (bool, "true or false"),
}


def cluster() -> str:
    """The submitit executor the jobs go to: RESFLOW_SUBMITIT_CLUSTER (slurm, local, debug), else Slurm,
    which must be there: without it submitit would quietly run the jobs on this machine, so that is
    refused unless asked for (RESFLOW_SUBMITIT_CLUSTER=local)."""
    asked = os.environ.get("RESFLOW_SUBMITIT_CLUSTER")
    if asked:
        if asked not in CLUSTERS:
            raise ConfigError(
                f"RESFLOW_SUBMITIT_CLUSTER={asked[:100]!r}: expected one of {', '.join(CLUSTERS)} "
                "(local: the jobs as processes on this machine; debug: in this process)"
            )
        return asked
    import shutil

    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError(
            "--backend slurm: no Slurm here (sbatch and srun not found on PATH); run on the cluster's login node, "
            "or set RESFLOW_SUBMITIT_CLUSTER=local to run the jobs as processes on this machine"
        )
    return "slurm"


def check() -> None:
    """Refused before anything is written: submitit missing, no Slurm (unless the local executor is
    asked for), an unknown RESFLOW_SUBMITIT_CLUSTER."""
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError(NEEDS_SUBMITIT)
    cluster()


def parse_options(items: list[str]) -> dict:
    """['partition=gpu', 'timeout_min=30'] -> {'slurm_partition': 'gpu', 'timeout_min': 30}; a generic
    parameter of the wrong type (timeout_min=abc) is a ConfigError."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu or --slurm timeout_min=30")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if key in TYPES:
            kind, what = TYPES[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ConfigError(f"--slurm {key}: must be {what}, got {raw.strip()[:100]!r}")
        out[key if key in GENERIC or key.startswith("slurm_") else f"slurm_{key}"] = value
    return out


def _task(task, points, done_dir=None) -> list:
    """On a node: runs the points; each finished point's text is written at once to `done_dir`
    (`<out>/slurm/done/<point key>.json`, on the shared file system), where the sweep's process
    picks it up while the job goes on, and where a --resume finds it if that process was lost.
    Returns (point, None, None) for a point written there, (point, text, None) for one that could
    not be (the text travels back in the job's result instead), (point, None, error) for one that raised."""
    from resflow._sys.files import write_text_atomic
    from resflow.executors.worker_setup import error_text, worker_process

    worker_process()
    out = []
    for point in points:
        try:
            text = task(point)
        except Exception as err:  # noqa: BLE001 - a failed point, as the local pool records it
            out.append((point, None, error_text(err)))
            continue
        try:
            if done_dir is None:
                raise OSError("no done dir")
            write_text_atomic(Path(done_dir) / f"{point.key}.json", text)
            out.append((point, None, None))
        except OSError:
            out.append((point, text, None))
    return out


DONE = "done"  # inside LOGS: the points the jobs finished, until the sweep's process has saved them


def _collect(points: list, done_dir: Path, save: Callable, saved: set) -> None:
    """Save each point of `points` not in `saved` whose text a job left in `done_dir` (then removed:
    the point file is the record from here on); a text that is not whole JSON is left to run again."""
    import json

    if not done_dir.is_dir():
        return
    for point in points:
        if point.index in saved:
            continue
        path = done_dir / f"{point.key}.json"
        try:
            text = path.read_text()
            json.loads(text)
        except (OSError, ValueError):
            continue
        save(point, text)
        saved.add(point.index)
        path.unlink(missing_ok=True)


def execute(
    points: list,
    task: Callable,
    save: Callable,
    workers: int,
    out: Path,
    options: dict | None = None,
    fail: Callable | None = None,
) -> None:
    """Submit the points as `workers` jobs, each running `task(point) -> text` on its points, and save
    each point as soon as its job has finished it. Points an earlier, lost run's jobs finished
    (their texts in `<out>/slurm/done/`) are collected first and not submitted again."""
    import time

    try:
        import submitit
    except ImportError:
        raise ConfigError(NEEDS_SUBMITIT) from None

    where = cluster()
    folder = Path(out) / LOGS
    done_dir = folder / DONE
    saved: set = set()
    _collect(points, done_dir, save, saved)  # --resume after the sweep's process was killed: its jobs' points
    points = [p for p in points if p.index not in saved]
    if not points:
        return
    executor = submitit.AutoExecutor(folder=folder, cluster=where)
    params = {**DEFAULTS, **(options or {})}
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError, AssertionError) as err:  # (submitit asserts its parameters' types)
        raise ConfigError(f"--slurm: {str(err).splitlines()[0]}") from None
    jobs_n = max(1, min(workers, len(points)))
    by_cost = sorted(points, key=lambda p: getattr(p, "cost", 0.0), reverse=True)
    chunks = [by_cost[i::jobs_n] for i in range(jobs_n)]  # dealt out by cost: the jobs take about as long
    try:
        done_dir.mkdir(parents=True, exist_ok=True)
        with executor.batch():
            jobs = [executor.submit(_task, task, chunk, str(done_dir)) for chunk in chunks]
    except Exception as err:  # noqa: BLE001 - sbatch missing or refusing: say why, in one line
        raise ResflowError(f"cannot submit the Slurm jobs: {type(err).__name__}: {_first(err)}") from None
    pending = list(jobs)
    poll = 0.5 if where in ("local", "debug") else 5.0
    try:
        while pending:
            _collect(points, done_dir, save, saved)  # points as they finish, not per job
            for job in [j for j in pending if j.done()]:
                pending.remove(job)
                try:
                    results = job.result()
                except Exception as err:  # noqa: BLE001 - the job died (killed, timed out, node failure)
                    _collect(points, done_dir, save, saved)  # what it finished before it died is kept
                    raise ResflowError(
                        f"Slurm job {job.job_id} failed ({type(err).__name__}: {_first(err)}; its log: "
                        f"{job.paths.stderr}); finished points are saved: rerun with --resume"
                    ) from None
                _collect(points, done_dir, save, saved)
                for point, text, error in results:
                    if error is None:
                        if point.index not in saved and text is not None:
                            save(point, text)
                            saved.add(point.index)
                    elif fail is not None:
                        fail(point, error)
                    else:
                        raise ResflowError(f"sweep point {point.variant} failed: {error}")
            if pending:
                time.sleep(poll)
    except BaseException:
        for job in pending:
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - best effort: the job may be gone already
                pass
        raise
    missing = [p.variant for p in points if p.index not in saved]
    if missing and fail is None:
        raise ResflowError(
            f"the Slurm jobs returned no result for {len(missing)} points (first: {missing[0]}); rerun with --resume"
        )


def _first(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]
