"""Results dirs into the trackers researchers already use: `resflow export DIR --to NAME [DEST]`.

One small module per tracker, named in EXPORTERS; each has `export(result, dest) -> Exported`
and reads the tables through `runs.py` (one run per variant and seed, tag names, per-step values),
so another tracker is one module and one line here. W&B and MLflow replay the tables through the
live sinks of resflow.results.sinks; their destination is a project / a tracking URI, not a dir.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

from resflow._sys.files import not_replaceable, write_text_atomic
from resflow._version import __version__
from resflow.errors import ConfigError
from resflow.results.files import holds_results

EXPORTERS = {  # name -> (module, the pip extra that brings what it needs, that package's import name)
    "tensorboard": ("resflow.report.export.tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("resflow.report.export.wandb", "wandb", "wandb"),
    "mlflow": ("resflow.report.export.mlflow", "mlflow", "mlflow"),
}


def check_target(to: str) -> None:
    """`to` is a known tracker and its package is installed (before any work)."""
    if to not in EXPORTERS:
        raise ConfigError(f"--to {to!r}: unknown tracker (allowed: {', '.join(EXPORTERS)})")
    _, extra, package = EXPORTERS[to]
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise ConfigError(f'--to {to} needs {package}: pip install "resflow[{extra}]" (or pip install {package})')


def default_dest(directory: Path) -> Path:
    """runs/<the results dir's name>: TensorBoard's and PyTorch's usual root, one sub-dir per export."""
    return Path("runs") / Path(directory).resolve().name


MARK = ".resflow-export.json"  # in an export's destination: the runs resflow wrote there (what --force may replace)
EVENTS = "events.out.tfevents."


def _marked_runs(dest: Path) -> list[str]:
    """The runs the mark in `dest` lists (each a relative path of safe components), or [] when there
    is no mark or it is not one resflow wrote (then nothing in `dest` counts as an earlier export)."""
    mark = dest / MARK
    if mark.is_symlink() or not mark.is_file():
        return []
    try:
        runs = json.loads(mark.read_text()).get("runs")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        return []
    ok = [r for r in runs if r and all(p not in ("", ".", "..") and not p.startswith(".") for p in r.split("/"))]
    return ok if len(ok) == len(runs) else []


def _unmarked(dest: Path, runs: list[str]) -> list[str]:
    """What in `dest` is not part of the earlier export its mark lists: anything but the mark, the
    listed run dirs (and the dirs above them) and the event files in those run dirs; links count."""
    runs_set = set(runs)
    above = {"/".join(r.split("/")[:i]) for r in runs for i in range(1, r.count("/") + 1)}
    foreign = []
    for root, dirs, files in os.walk(dest):
        rel = Path(root).relative_to(dest).as_posix()
        rel = "" if rel == "." else rel
        for d in list(dirs):
            sub = f"{rel}/{d}" if rel else d
            if Path(root, d).is_symlink() or (sub not in runs_set and sub not in above):
                foreign.append(sub)
                dirs.remove(d)  # never walked into
        for f in files:
            sub = f"{rel}/{f}" if rel else f
            ours = (sub == MARK) if not rel else (rel in runs_set and f.startswith(EVENTS))
            if not ours or Path(root, f).is_symlink():
                foreign.append(sub)
    return sorted(foreign)


def prepare_dest(dest: Path, force: bool) -> None:
    """An empty or new dir; with `force`, a dir holding only an earlier resflow export (the runs its
    mark lists, nothing else) has those runs removed. Anything else is refused, never deleted: the
    user's own TensorBoard runs, a link, a dir that is not the destination itself."""
    dest = Path(dest)
    if dest.is_symlink():
        raise ConfigError(
            f"{str(dest)!r} is a symbolic link (to {os.readlink(dest)!r}); resflow never writes through a link "
            f"given as LOGDIR: pass the directory itself ({str(dest.resolve())!r})"
        )
    above = dest.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if holds_results(above):
        raise ConfigError(
            f"{str(dest)!r} is inside the results dir {str(above)!r}; resflow never adds to a results dir "
            "what it did not write there: name a LOGDIR outside it (the default is runs/<DIR's name>)"
        )
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{str(dest)!r} exists and is {not_replaceable(dest) or 'a file'}, not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        runs = _marked_runs(dest)
        foreign = _unmarked(dest, runs)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(
                f"{str(dest)!r} holds files no resflow export wrote ({shown}); --force replaces only an "
                "earlier resflow export: choose another destination"
            )
        if not force:
            raise ConfigError(f"{str(dest)!r} already holds an export; pass --force to replace it, or name another destination")
        for run in runs:
            shutil.rmtree(dest / run, ignore_errors=True)
            for parent in list((dest / run).parents)[: run.count("/")]:  # the variant dirs, once empty
                try:
                    parent.rmdir()
                except OSError:
                    pass
        (dest / MARK).unlink(missing_ok=True)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {str(dest)!r}: {err.strerror or err}") from None


def _marker(dest: Path):
    """mark(run): record `run` in dest's mark (atomically) before it is written."""
    written: list[str] = []

    def mark(run: str) -> None:
        written.append(run)
        write_text_atomic(Path(dest) / MARK, json.dumps({"resflow": __version__, "runs": written}, indent=1) + "\n")

    return mark


def export(result, to: str, dest, force: bool = False, name: str = "resflow"):
    """Write `result` (a RunResult, e.g. read_run(DIR)) for tracker `to` into `dest` (TensorBoard: a
    logdir; W&B: a project, default `name`; MLflow: a tracking URI, default MLflow's, experiment
    `name`); returns what the tracker's module reports (an `Exported`). A TensorBoard logdir's
    `.resflow-export.json` lists the runs written, so that a later `--force` replaces them and nothing else."""
    check_target(to)
    module = importlib.import_module(EXPORTERS[to][0])
    if to == "wandb":
        return module.export(result, str(dest) if dest else name)
    if to == "mlflow":
        return module.export(result, str(dest) if dest else None, name)
    prepare_dest(dest, force)
    return module.export(result, Path(dest), mark=_marker(dest))
