"""Results dirs into the trackers researchers already use: `resflow export DIR --to NAME [DEST]`.

One small module per tracker, named in EXPORTERS; each has `export(result, dest) -> Exported`
and reads the tables through `runs.py` (one run per variant and seed, tag names, per-step values),
so another tracker is one module and one line here. W&B and MLflow replay the tables through the
live sinks of resflow.results.sinks; their destination is a project / a tracking URI, not a dir.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from resflow.errors import ConfigError

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


def prepare_dest(dest: Path, force: bool) -> None:
    """An empty or new dir; with `force`, a dir holding only earlier exports (event files and the
    dirs that hold them) is emptied; anything else is refused."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{str(dest)!r} exists and is a file, not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        foreign = [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith("events.out.tfevents.")]
        if foreign:
            shown = ", ".join(str(p.relative_to(dest)) for p in foreign[:3])
            raise ConfigError(f"{str(dest)!r} holds files that are not event files ({shown}); choose another destination")
        if not force:
            raise ConfigError(f"{str(dest)!r} already holds an export; pass --force to replace it, or name another destination")
        shutil.rmtree(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {str(dest)!r}: {err.strerror or err}") from None


def export(result, to: str, dest, force: bool = False, name: str = "resflow"):
    """Write `result` (a RunResult, e.g. read_run(DIR)) for tracker `to` into `dest` (TensorBoard: a
    logdir; W&B: a project, default `name`; MLflow: a tracking URI, default MLflow's, experiment
    `name`); returns what the tracker's module reports (an `Exported`)."""
    check_target(to)
    module = importlib.import_module(EXPORTERS[to][0])
    if to == "wandb":
        return module.export(result, str(dest) if dest else name)
    if to == "mlflow":
        return module.export(result, str(dest) if dest else None, name)
    prepare_dest(dest, force)
    return module.export(result, Path(dest))
