"""The one results schema: tidy tables, and the run directories that hold them.

A results dir holds grads.csv, params.csv, summary.csv, config.yaml and meta.json. It is written
whole into a staging dir next to its destination and renamed into place, so a reader never sees a
partial result, and an existing result is replaced only when asked (`force`).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from resflow.csvtext import to_csv_text
from resflow.errors import ConfigError, ResflowError
from resflow.signals import HANDLED, deferred

# Columns copied from the config into every row, so CSVs of different runs concatenate directly.
CONFIG_COLUMNS = [
    "block", "depth", "width", "activation", "residual", "residual_scale",
    "norm", "norm_type", "init_scheme", "init_scale",
]
GRADS_COLUMNS = [
    "variant", "seed", "step", "layer", "sublayer",
    "input_grad_norm", "activation_rms", "param_grad_norm", *CONFIG_COLUMNS,
]
PARAMS_COLUMNS = ["variant", "seed", "step", "layer", "param", "grad_norm", "value_norm"]
TRAIN_PARAMS_COLUMNS = ["update_ratio", "movement"]  # added to params.csv by training runs (train.steps > 0)
TRAIN_COLUMNS = [  # train.csv: training runs only, one row per (variant, seed, step)
    "variant", "seed", "step", "loss", "eval_loss", "grad_norm_total", "lr", "wall_time_s", "task_floor", "task_baseline",
    *CONFIG_COLUMNS,
]
SUMMARY_COLUMNS = [
    "variant", "seed", "step", "grad_first", "grad_last", "grad_ratio", "log10_grad_ratio",
    "gain_per_layer", "finite", *CONFIG_COLUMNS,
]
RESULT_FILES = ("grads.csv", "params.csv", "summary.csv", "config.yaml", "meta.json")
# Everything resflow writes into a results dir (a run's, a sweep's, the demo's): `--force` replaces
# a dir holding nothing else, and refuses one holding anything else (the user's own files).
WRITTEN_NAMES = {*RESULT_FILES, "train.csv", "demo.csv", "plan.json", "points"}  # plan.json, points/: a sweep's
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def config_columns(cfg) -> dict[str, Any]:
    m = cfg.model
    return dict(
        block=m.block, depth=m.depth, width=m.width, activation=m.activation if m.block == "mlp" else m.ffn, residual=m.residual,
        residual_scale=m.residual_scale, norm=m.norm, norm_type=m.norm_type,
        init_scheme=m.init.scheme, init_scale=m.init.scale,
    )


def _ordered(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The schema's columns first, in order; any extra columns (added by later features) after."""
    extra = [c for c in df.columns if c not in columns]
    return df[[c for c in columns if c in df.columns] + extra]


def grads_frame(rows: dict[str, list]) -> pd.DataFrame:
    return _ordered(pd.DataFrame(rows), GRADS_COLUMNS)


def params_frame(rows: dict[str, list]) -> pd.DataFrame:
    return _ordered(pd.DataFrame(rows), PARAMS_COLUMNS)


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    return _ordered(df, SUMMARY_COLUMNS)


def train_frame(rows: dict[str, list]) -> pd.DataFrame:
    return _ordered(pd.DataFrame(rows), TRAIN_COLUMNS)


@dataclass
class RunResult:
    """What `resflow.run` returns and what a results dir holds."""

    grads: pd.DataFrame
    params: pd.DataFrame
    summary: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)  # the fully resolved config
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was written / read from
    train: pd.DataFrame | None = None  # train.csv: training runs only


# ---------------------------------------------------------------------------------------------
# Writing


def check_out_dir(path: Path, force: bool = False) -> None:
    """Fail before any work if `path` cannot become a results dir. An existing dir is replaced only
    with `force`, and only if it holds nothing but what resflow writes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {str(path)!r} exists and is a file, not a directory")
    here = Path.cwd().resolve()
    if path.exists() and (path.resolve() == here or path.resolve() in here.parents):
        raise ConfigError(f"output path {str(path)!r} is the current directory or holds it; "
                          "a results dir is written whole, so choose a new subdirectory with --out")
    if path.is_dir() and any(path.iterdir()):
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"{str(path)!r} holds files resflow did not write ({shown}); "
                              "--force replaces only resflow's own results: choose another --out")
        if not force:
            raise ConfigError(
                f"{str(path)!r} already holds results; pass --force to replace them or --out to write elsewhere"
            )
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise ConfigError(f"output path {str(path)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output path {str(path)!r} is not writable (no write permission in {str(parent)!r})")


def foreign_entries(path: Path) -> list[str]:
    """The names in dir `path` that resflow does not write (sorted): the user's own files; inside a
    sweep's points/ only point files (`points/notes.txt` is foreign)."""
    out = []
    for entry in Path(path).iterdir():
        if not _written_by_resflow(entry):
            out.append(entry.name)
        elif entry.is_dir():  # points/
            out += [f"{entry.name}/{e.name}" for e in entry.iterdir() if not _point_file(e)]
    return sorted(out)


def _point_file(entry: Path) -> bool:
    """What a sweep writes into points/: <index>-<hash>.json, <index>-<hash>.failed.txt, temp files."""
    return entry.is_file() and (entry.name.endswith((".json", ".failed.txt")) or _temp_name(entry.name))


def _temp_name(name: str) -> bool:
    """A stopped atomic write's temp file: ".grads.csv.x1y2.tmp", ".profile.png.x1y2.tmp.png"."""
    return name.startswith(".") and ".tmp" in name


def _written_by_resflow(entry: Path) -> bool:
    name = entry.name
    if name.startswith("."):  # only those temp files: never .git and the like
        return _temp_name(name) and entry.is_file()
    if name == "points":
        return entry.is_dir()
    return entry.is_file() and (name in WRITTEN_NAMES or name.endswith(FIGURE_SUFFIXES))


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Full precision (floats round-trip exactly), atomically: temp file + fsync + rename."""
    write_text_atomic(path, to_csv_text(df))  # = df.to_csv(index=False), faster (resflow/csvtext.py)


def umask() -> int:
    """This process's umask, read without changing it (Linux); else set and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path, directory: bool = False) -> None:
    """Give a temp file or dir (mkstemp's 0600, mkdtemp's 0700) the mode a plain open()/mkdir() would
    have had under the umask, so results are as readable as the user's other files."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    except OSError:  # a file system without modes (vfat, some network mounts): the mode is a nicety
        pass


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        shareable(tmp)
        _fsync_write(Path(tmp), text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PARALLEL_ROWS = 20_000  # below this a table is written faster than a helper process starts


def write_files(result: RunResult, directory: Path, processes: int = 1) -> None:
    """Write the result's files into an existing directory (each file atomically).

    With `processes` >= 2 (a sweep's workers, whose cores are free again by now), a forked helper
    writes params.csv while this process writes the rest: formatting floats is most of the time.
    Only from a single-threaded process (a fork copies no other thread, nor the locks they hold).
    """
    import yaml

    helper, helper_wrote = None, False
    try:
        with deferred():  # no signal between the fork and `helper = `: a running helper is always known
            if processes >= 2 and len(result.params) >= PARALLEL_ROWS and hasattr(os, "fork") and threading.active_count() == 1:
                helper = _fork(lambda: write_csv(result.params, directory / "params.csv"))
        write_csv(result.grads, directory / "grads.csv")
        if helper is not None:
            with deferred():  # waited for, reaped and forgotten in one step: its pid is never used once reusable
                helper_wrote = _joined(helper, directory)
                helper = None
    except BaseException:  # Ctrl-C, a full disk: a helper still running is stopped, and finishes no file later
        if helper is not None:
            _end(helper, directory)
        raise
    if not helper_wrote:  # no helper, or it failed (killed?): written here
        write_csv(result.params, directory / "params.csv")
    write_csv(result.summary, directory / "summary.csv")
    if result.train is not None:
        write_csv(result.train, directory / "train.csv")
    write_text_atomic(directory / "config.yaml", yaml.safe_dump(result.config, sort_keys=False))
    write_text_atomic(directory / "meta.json", json.dumps(result.meta, indent=2, default=str) + "\n")


def _fork(work) -> int:
    """Run `work()` in a forked child (which then leaves at once, running none of our exit code).

    The child takes the default action on SIGINT/SIGTERM/SIGHUP (it ends), not the parent's
    handlers: Ctrl-C ends both, and the parent cleans up after it.
    """
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for signum in (signal.SIGINT, *HANDLED):
                signal.signal(signum, signal.SIG_DFL)
            gc.disable()  # no collection copies the pages the child shares with its parent
            work()
            status = 0
        finally:
            os._exit(status)
    return pid


def _joined(pid: int, directory: Path) -> bool:
    """Wait for a `_fork` child of `write_files`; True if it wrote its file. If it did not (killed?),
    the temp file it may have left is removed."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already (SIGCHLD ignored): its outcome is unknown
        status = -1
    if status != 0:
        _remove_temps(directory, "params.csv")
    return status == 0


def _end(pid: int, directory: Path) -> None:
    """Stop a `_fork` child of `write_files` now, reap it and remove its temp file (signals held back
    meanwhile, so a second Ctrl-C cannot cut this short)."""
    with deferred():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        _remove_temps(directory, "params.csv")


def _remove_temps(directory: Path, name: str) -> None:
    """The temp files `write_text_atomic` leaves when stopped mid-write (here: a helper's)."""
    for stale in Path(directory).glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_run(result: RunResult, path: Path, force: bool = False, extra=None) -> Path:
    """Write a whole results dir atomically: staged beside `path`, then renamed into place.

    `extra(staging_dir)` may add files (figures) before the rename.
    """
    path = Path(path)
    check_out_dir(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
        shareable(staging, directory=True)
    except OSError as err:
        raise ResflowError(f"cannot create the results dir {str(path)!r}: {err.strerror or err}") from None
    old = None
    try:
        write_files(result, staging)
        if extra is not None:
            extra(staging)
        with deferred():  # a signal here waits until the swap is whole
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)  # put the earlier result back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    result.path = path
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def is_results_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "grads.csv").is_file() and (path / "summary.csv").is_file()


def read_run(path: Path) -> RunResult:
    """Read a results dir back (for `show` and `plot`); a clear error if it is not one."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{str(path)!r} does not exist")
    if not is_results_dir(path):
        raise ConfigError(f"{str(path)!r} is not a resflow results dir (no grads.csv and summary.csv in it)")
    try:
        grads = pd.read_csv(path / "grads.csv")
        summary = pd.read_csv(path / "summary.csv")
        params = pd.read_csv(path / "params.csv") if (path / "params.csv").is_file() else pd.DataFrame(columns=PARAMS_COLUMNS)
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        train = pd.read_csv(path / "train.csv") if (path / "train.csv").is_file() else None
    except (OSError, ValueError, yaml.YAMLError, pd.errors.ParserError) as err:
        raise ResflowError(f"{str(path)!r}: cannot read the results: {err}") from None
    missing = [c for c in ("variant", "seed", "layer", "input_grad_norm") if c not in grads.columns]
    if missing:
        raise ConfigError(f"{str(path / 'grads.csv')!r} lacks the columns {', '.join(missing)}: not a resflow results file")
    return RunResult(grads=grads, params=params, summary=summary, config=config or {}, meta=meta, path=path, train=train)
