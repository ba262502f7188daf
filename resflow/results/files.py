"""Results dirs on disk: written whole and atomically, read back with a clear error.

A results dir holds grads.csv, params.csv, summary.csv, config.yaml and meta.json (train.csv for
training runs). It is written into a staging dir next to its destination and renamed into place, so
a reader never sees a partial result, and an existing result is replaced only when asked (`force`).

The tables can be written as Parquet too, or instead (`fmt`: csv, parquet, both; pyarrow, the
`parquet` extra): grads.parquet and so on, holding exactly the values (and dtypes) that reading the
CSV gives, so `read_run` returns the same frames whichever it finds.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from resflow._sys.files import atomic_file, not_replaceable, shareable, write_all, write_text_atomic
from resflow._sys.locks import pid_alive
from resflow._sys.signals import deferred
from resflow.errors import ConfigError, EnvironmentFault, ResflowError, environment_error
from resflow.results.csvtext import to_csv_text
from resflow.results.tables import PARAMS_COLUMNS, RunResult

RESULT_FILES = ("grads.csv", "params.csv", "summary.csv", "config.yaml", "meta.json")
TABLES = ("grads", "params", "summary", "train", "hist")  # train: training runs only; hist: opted into
FORMATS = ("csv", "parquet", "both")  # how the tables are written (`--format`)
NEEDS_PYARROW = 'Parquet needs pyarrow: pip install "resflow[parquet]" (or pip install pyarrow)'
# Everything resflow writes into a results dir (a run's, a sweep's, the demo's): `--force` replaces
# a dir holding nothing else, and refuses one holding anything else (the user's own files).
WRITTEN_NAMES = {
    *RESULT_FILES,
    "train.csv",
    "hist.csv",
    "demo.csv",
    "plan.json",
    "points",
    "slurm",
    "report.html",
    *(f"{t}.parquet" for t in TABLES),
}  # plan.json, points/: a sweep's
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


# ---------------------------------------------------------------------------------------------
# Writing


def check_out_dir(path: Path, force: bool = False) -> None:
    """Fail before any work if `path` cannot become a results dir. An existing dir is replaced only
    with `force`, and only if it holds nothing but what resflow writes."""
    path = Path(path)
    check_out_path(path)
    if path.exists() and not path.is_dir():
        kind = not_replaceable(path) or "a file"
        raise ConfigError(f"output path {str(path)!r} exists and is {kind}, not a directory")
    here = Path.cwd().resolve()
    if path.exists() and (path.resolve() == here or path.resolve() in here.parents):
        raise ConfigError(
            f"output path {str(path)!r} is the current directory or holds it; "
            "a results dir is written whole, so choose a new subdirectory with --out"
        )
    if path.is_dir() and any(path.iterdir()):
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(
                f"{str(path)!r} holds files resflow did not write ({shown}); "
                "--force replaces only resflow's own results: choose another --out"
            )
        if not force:
            raise ConfigError(f"{str(path)!r} already holds results; pass --force to replace them or --out to write elsewhere")
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise ConfigError(f"output path {str(path)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output path {str(path)!r} is not writable (no write permission in {str(parent)!r})")


# The longest name resflow puts beside a results dir `<name>`: its staging dir
# `.<name>.staging-<pid>-<8 random>`, its lock `.<name>.lock`, the replaced result `.<name>.old-<pid>`.
BESIDE_EXTRA = len(".") + len(".staging-") + 10 + 1 + 8


def check_out_path(path: Path) -> None:
    """The rules of an output path itself: not a symbolic link (a link is never replaced, nor written
    through: resolve it yourself and pass the target), and names short enough for the file system
    (with the staging dir's name resflow makes beside it)."""
    path = Path(path)
    name_max = 255
    try:
        name_max = os.pathconf(_existing_ancestor_quiet(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        pass
    too_long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if too_long or len(os.fsencode(path.name)) + BESIDE_EXTRA > name_max:
        part = too_long[0] if too_long else path.name
        raise ConfigError(
            f"output path {_short(path)!r}: the name {_short(Path(part))!r} is too long for the file system "
            f"({len(os.fsencode(part))} bytes; at most {name_max - BESIDE_EXTRA} for a results dir's name)"
        )
    if len(os.fsencode(str(path.absolute()))) >= 4096:
        raise ConfigError(f"output path {_short(path)!r} is too long ({len(os.fsencode(str(path.absolute())))} bytes)")
    if path.is_symlink():
        target = os.readlink(path)
        raise ConfigError(
            f"output path {str(path)!r} is a symbolic link (to {target!r}); resflow never replaces or "
            f"writes through a link given as --out: pass the directory itself (e.g. --out {str(path.resolve())!r})"
        )


def _short(path: Path, keep: int = 60) -> str:
    text = str(path)
    return text if len(text) <= keep else text[: keep // 2] + "…" + text[-keep // 2 :]


def _existing_ancestor_quiet(path: Path) -> Path:
    """The nearest existing dir above `path`, without tripping on a name too long to stat."""
    path = path.absolute()
    for parent in [path, *path.parents]:
        try:
            if parent.is_dir():
                return parent
        except OSError:
            continue
    return Path("/")


def foreign_entries(path: Path) -> list[str]:
    """The names in dir `path` that resflow does not write (sorted): the user's own files; inside a
    sweep's points/ only point files (`points/notes.txt` is foreign)."""
    out = []
    for entry in Path(path).iterdir():
        if not _written_by_resflow(entry):
            out.append(entry.name)
        elif entry.is_dir() and entry.name == "points":
            out += [f"{entry.name}/{e.name}" for e in entry.iterdir() if not _point_file(e)]
    return sorted(out)


def _point_file(entry: Path) -> bool:
    """What a sweep writes into points/: <index>-<hash>.json, <index>-<hash>.failed.txt, temp files."""
    return (
        entry.is_file() and not entry.is_symlink() and (entry.name.endswith((".json", ".failed.txt")) or _temp_name(entry.name))
    )


def _temp_name(name: str) -> bool:
    """A stopped atomic write's temp file: ".grads.csv.x1y2.tmp", ".profile.png.x1y2.tmp.png"."""
    return name.startswith(".") and ".tmp" in name


def _written_by_resflow(entry: Path) -> bool:
    name = entry.name
    if entry.is_symlink():  # resflow writes no links: one is the user's (and never replaced)
        return False
    if name.startswith("."):  # only those temp files: never .git and the like
        return _temp_name(name) and entry.is_file()
    if name in ("points", "slurm"):  # a sweep's point files; its Slurm jobs' logs (resflow/executors/slurm.py)
        return entry.is_dir()
    return entry.is_file() and (name in WRITTEN_NAMES or name.endswith(FIGURE_SUFFIXES))


def holds_results(directory: Path) -> bool:
    """Is `directory` a results dir (resflow's tables, or a sweep's plan.json, or a meta.json in it)?"""
    directory = Path(directory)
    return is_results_dir(directory) or any((directory / n).is_file() for n in ("meta.json", "plan.json"))


def check_out_file(path: Path, force: bool = False, own_name: str | None = None, ours=None, option: str = "--out") -> None:
    """Fail before any work unless `path` may become a file this writer writes (`resflow report --out`).

    The rule every writer follows: only a regular file is ever replaced (never a link, directory,
    device, FIFO or socket); inside a results dir only the writer's own file (`own_name`, e.g.
    report.html) is written, never the results' tables; elsewhere an existing file is replaced only if
    resflow wrote it (`ours(path)` says so) or with `force` (a regular file the user names). The
    directory it goes into must exist."""
    path = Path(path)
    kind = not_replaceable(path)
    if kind == "a directory":
        example = path / own_name if own_name else path / "FILE"
        raise ConfigError(f"{option} {str(path)!r} is a directory; name the file to write, e.g. {option} {str(example)!r}")
    if kind is not None:
        raise ConfigError(
            f"{option} {str(path)!r} is {kind}; resflow replaces only regular files, never a link, device, "
            "FIFO or socket: name another file"
        )
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError(
            f"{option} {str(path)!r}: the directory {str(path.parent)!r} {what}; create it first or name another file"
        )
    inside = holds_results(parent)
    if inside and path.name != own_name:
        allowed = f" (only its {own_name} goes there)" if own_name else ""
        raise ConfigError(
            f"{option} {str(path)!r} is inside the results dir {str(path.parent)!r}{allowed}; "
            "resflow never writes over a results dir's own files: name a file elsewhere"
        )
    if path.exists() and not inside and not force and not (ours is not None and ours(path)):
        raise ConfigError(f"{option} {str(path)!r} already exists and resflow did not write it; pass --force to replace it")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Full precision (floats round-trip exactly), atomically: temp file + fsync + rename."""
    with atomic_file(path) as fh:  # = write_text_atomic, its big writes in pieces (`write_pieces`)
        write_pieces(fh.fileno(), to_csv_text(df).encode("utf-8"))  # = df.to_csv(index=False), faster (csvtext.py)


def read_csv(path) -> pd.DataFrame:
    """A results CSV with every float exactly as written: pandas before 3.0 parses floats with a
    fast routine that is off in the last digit for about a third of them (round_trip is exact)."""
    if int(pd.__version__.split(".")[0]) < 3:
        return pd.read_csv(path, float_precision="round_trip")
    return pd.read_csv(path)  # exact already (and float_precision is deprecated)


def check_format(fmt: str) -> None:
    """`fmt` is one of FORMATS, and pyarrow is there when it asks for Parquet (before any work)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown format (allowed: {', '.join(FORMATS)})")
    if fmt != "csv":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(NEEDS_PYARROW)


def as_read_from_csv(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with the dtypes and values reading its CSV back would give: numbers and booleans are
    kept (floats round-trip exactly); every other column goes through the CSV text (a column of
    floats and strings becomes strings, None becomes NaN, as in the CSV)."""
    import io

    if not len(df):  # a header alone: what pandas makes of it
        return read_csv(io.StringIO(to_csv_text(df)))
    other = [c for c in df.columns if df[c].dtype.kind not in "biuf"]
    if not other:
        return df
    parsed = read_csv(io.StringIO(to_csv_text(df[other])))
    out = df.copy()
    for c in other:
        out[c] = parsed[c].to_numpy()
    return out


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """The table as Parquet (pyarrow), atomically, holding what reading its CSV would give."""
    with atomic_file(path) as fh:  # (fsync'ed and renamed by atomic_file)
        as_read_from_csv(df).to_parquet(fh, index=False, engine="pyarrow")


def read_parquet(path) -> pd.DataFrame:
    """A results Parquet file as reading the CSV would give it (a missing text value as NaN)."""
    import numpy as np

    df = pd.read_parquet(path, engine="pyarrow")
    for c in df.columns:
        if df[c].dtype == object and df[c].isna().any():
            df[c] = df[c].where(df[c].notna(), np.nan)
    return df


def write_files(result: RunResult, directory: Path, fmt: str = "csv") -> None:
    """Write the result's files into an existing directory (each file atomically); `fmt`: the
    tables as csv, parquet or both. meta.json last, with what the others hold (`file_records`), for
    `read_run` to check."""
    check_format(fmt)
    for name in TABLES:
        df = getattr(result, name)
        if df is None:
            continue
        if fmt != "parquet":
            write_csv(df, directory / f"{name}.csv")
        if fmt != "csv":
            write_parquet(df, directory / f"{name}.parquet")
    write_config_meta(
        directory, result.config, result.meta, {t: len(getattr(result, t)) for t in TABLES if getattr(result, t) is not None}
    )


def write_config_meta(directory: Path, config: dict, meta: dict, rows: dict[str, int]) -> None:
    """config.yaml, then meta.json with what the tables written hold (`rows`: each table's rows), last."""
    import yaml

    write_text_atomic(Path(directory) / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    meta = {**meta, "files": table_records(directory, rows)}
    write_text_atomic(Path(directory) / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


RECORDED = {
    **{f"{t}.{ext}": t for t in TABLES for ext in ("csv", "parquet")},
    "config.yaml": None,
}  # the files meta.json's `files` vouches for (figures are redrawn from them)


def file_records(result: RunResult, directory: Path) -> dict[str, dict]:
    """What was written, for `read_run` to check: {file: {"rows": table rows, "sha256": of its bytes}},
    hashed from the files as they are on disk."""
    return table_records(directory, {t: len(getattr(result, t)) for t in TABLES if getattr(result, t) is not None})


def table_records(directory: Path, rows: dict[str, int]) -> dict[str, dict]:
    """`file_records` from each table's rows (`rows`), for tables written without a RunResult (streamed)."""
    records = {}
    for name, table in RECORDED.items():
        if (Path(directory) / name).is_file():
            record = {"sha256": file_sha256(Path(directory) / name)}
            if table is not None:
                record = {"rows": rows[table], **record}
            records[name] = record
    return records


def file_sha256(path: Path, size: int | None = None) -> str:
    """sha256 of the file's bytes (its first `size` bytes if given)."""
    with open(path, "rb") as fh:
        if size is None:
            return hashlib.file_digest(fh, "sha256").hexdigest()
        digest, left = hashlib.sha256(), size
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        return digest.hexdigest()


WRITE_PIECE = 2 << 20  # bytes per write(2) of a big table (`write_pieces`)


def write_pieces(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, WRITE_PIECE bytes at a time: on this project's Linux VMs one
    write(2) of 10 MB into the page cache takes ~35x as long as the same bytes in 2 MB pieces
    (benchmarks/sweep_scale.py --writes measures it), and a sweep's table chunks are ~10 MB each."""
    view = memoryview(data)
    for start in range(0, len(view), WRITE_PIECE):
        write_all(fd, view[start : start + WRITE_PIECE])


class TableStream:
    """One results table written a chunk of rows at a time, in `fmt` (csv, parquet or both), atomically
    (temp files renamed into place when the `with` block ends without error, else removed): the CSV
    appended chunk by chunk, byte for byte `write_csv` of the whole table when every chunk has its
    dtypes; the Parquet file a row group per chunk, the values `write_parquet` writes. Memory: one chunk.

        with TableStream(out, "grads", "csv") as stream:
            for chunk in chunks:
                stream.write(chunk)
    """

    def __init__(self, directory: Path, name: str, fmt: str = "csv") -> None:
        check_format(fmt)
        self.paths = [Path(directory) / f"{name}.{ext}" for ext in ("csv", "parquet") if fmt in (ext, "both")]
        self.rows = 0
        self._stack = None
        self._csv = self._parquet = None
        self._writer = self._schema = self._dtypes = None
        self._header = b""

    def __enter__(self) -> "TableStream":
        from contextlib import ExitStack

        self._stack = ExitStack().__enter__()
        try:
            for path in self.paths:
                fh = self._stack.enter_context(atomic_file(path))
                if path.suffix == ".csv":
                    self._csv = fh
                else:
                    self._parquet = fh
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def write(self, df: pd.DataFrame) -> None:
        """Append `df`'s rows: the same columns, in the same order and dtypes, as every other chunk."""
        if self._csv is not None:
            text = to_csv_text(df).encode("utf-8")
            header, _, body = text.partition(os.linesep.encode())
            if not self.rows and not self._header:
                write_pieces(self._csv.fileno(), text)
                self._header = header
            elif header != self._header:
                raise ValueError(f"a chunk with other columns than the first: {header[:80]!r}")
            else:
                write_pieces(self._csv.fileno(), body)
        if self._parquet is not None:
            self._write_parquet(df)
        self.rows += len(df)

    def _write_parquet(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        chunk = as_read_from_csv(df)
        dtypes = list(chunk.dtypes)
        if self._writer is None:
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            self._schema, self._dtypes = table.schema, dtypes
            self._writer = pq.ParquetWriter(self._parquet, self._schema)
        else:
            if dtypes != self._dtypes:  # read from the whole CSV, a column would not have one chunk's dtype
                raise ChunkTypes(f"a chunk's dtypes {dtypes} differ from the first's {self._dtypes}")
            table = pa.Table.from_pandas(chunk, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)

    def __exit__(self, kind, err, tb) -> bool:
        if self._writer is not None:  # the Parquet footer (a failing stream's temp file goes anyway)
            try:
                self._writer.close()
            except BaseException as close_err:
                if kind is None:
                    self._stack.__exit__(type(close_err), close_err, close_err.__traceback__)
                    raise
        return bool(self._stack.__exit__(kind, err, tb))


class ChunkTypes(ValueError):
    """A streamed chunk whose values would not be typed as the whole table's (TableStream)."""


def write_run(result: RunResult, path: Path, force: bool = False, extra=None, fmt: str = "csv") -> Path:
    """Write a whole results dir atomically: staged beside `path`, then renamed into place.

    `extra(staging_dir)` may add files (figures) before the rename; `fmt`: csv, parquet or both.
    """
    path = Path(path)
    check_out_dir(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_beside(path)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-{os.getpid()}-", dir=path.parent))
        shareable(staging, directory=True)
    except OSError as err:
        raise ResflowError(f"cannot create the results dir {str(path)!r}: {err.strerror or err}") from None
    old = None
    try:
        write_files(result, staging, fmt=fmt)
        if extra is not None:
            extra(staging)
        with deferred():  # a signal here waits until the swap is whole
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(staging, path)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)  # put the earlier result back
        if isinstance(err, EnvironmentFault):  # named by where it was going, not the staging dir
            raise EnvironmentFault(str(err).replace(str(staging), str(path))) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    result.path = path
    return path


class AppendedRun:
    """A results dir grown by appending, for a run that records step after step (`resflow.watch`).

    `start` writes the first part as a whole results dir with `write_run` (staged, renamed into place:
    a dir it replaces keeps nothing of the old run); each `append` then adds the new rows' CSV lines
    to the end of each table (the bytes `to_csv_text` gives the whole table: header once, the same
    line per row), fsyncs them, and rewrites only config.yaml and meta.json, whose `files` record each
    table's rows and sha256 as `write_files` does (the hashes carried on incrementally) and its length
    in bytes, which is what readers read of it (`appended_sizes`). The cost of an append is that of
    its own rows, whatever the size of the tables. Signals wait until an append and its meta.json are
    both written; a kill -9 between leaves bytes past the recorded lengths, which readers leave out:
    the dir is a valid results dir, the last complete append's, at every moment.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._hashes: dict[str, "hashlib._Hash"] = {}
        self._rows: dict[str, int] = {}
        self._headers: dict[str, str] = {}
        self._config = ""  # config.yaml's text as written
        self._sizes: dict[str, int] = {}  # each table's length in bytes as written

    def start(self, result: RunResult, force: bool = False) -> None:
        """Write `result` as the results dir (replacing an earlier result only with `force`)."""
        write_run(result, self.directory, force=force)
        self._config = (self.directory / "config.yaml").read_text()
        for name in TABLES:
            df = getattr(result, name)
            file = self.directory / f"{name}.csv"
            if df is None or not file.is_file():
                continue
            data = file.read_bytes()
            self._hashes[name] = hashlib.sha256(data)
            self._rows[name] = len(df)
            self._sizes[name] = len(data)
            self._headers[name] = data.decode().split(os.linesep, 1)[0] + os.linesep
        with deferred():
            self._write_meta(result.meta)  # (with each table's length: see `appended_sizes`)

    def append(self, tables: dict[str, pd.DataFrame | None], config: dict, meta: dict) -> None:
        """Add each table's new rows (`tables`: name -> the new rows) and write config and meta. On an
        error (disk full...) every table is cut back to what meta.json vouches for."""
        import yaml

        state = (dict(self._hashes), dict(self._rows), dict(self._headers), self._config, dict(self._sizes))
        self._hashes = {name: h.copy() for name, h in self._hashes.items()}
        grown: list[tuple[Path, int]] = []
        try:
            with deferred():
                for name, df in tables.items():
                    if df is None or not len(df):
                        continue
                    self._add(name, to_csv_text(df), len(df), grown)
                text = yaml.safe_dump(config, sort_keys=False)
                if text != self._config:  # (rewritten only when it changes)
                    write_text_atomic(self.directory / "config.yaml", text)
                    self._config = text
                self._write_meta(meta)
        except BaseException:
            for file, size in grown:
                try:
                    os.truncate(file, size)
                except OSError:
                    pass
            self._hashes, self._rows, self._headers, self._config, self._sizes = state
            raise

    def _write_meta(self, meta: dict) -> None:
        """meta.json with each table's rows, length (`bytes`: what a reader reads of it) and sha256."""
        files = {
            f"{name}.csv": {"rows": self._rows[name], "bytes": self._sizes[name], "sha256": h.hexdigest()}
            for name, h in self._hashes.items()
        }
        files["config.yaml"] = {"sha256": hashlib.sha256(self._config.encode()).hexdigest()}
        write_text_atomic(self.directory / "meta.json", json.dumps({**meta, "files": files}, indent=2, default=str) + "\n")

    def _add(self, name: str, text: str, rows: int, grown: list) -> None:
        file = self.directory / f"{name}.csv"
        if name not in self._hashes:  # a table with no file yet: written whole (with its header)
            write_text_atomic(file, text)
            self._hashes[name] = hashlib.sha256(text.encode())
            self._rows[name] = rows
            self._sizes[name] = len(text.encode())
            self._headers[name] = text.split(os.linesep, 1)[0] + os.linesep
            return
        header = self._headers[name]
        if not text.startswith(header):
            raise ResflowError(f"{str(file)!r}: the new rows' columns differ from the file's; nothing was appended")
        data = text[len(header) :].encode()
        grown.append((file, file.stat().st_size))
        append_bytes(file, data)
        self._hashes[name].update(data)
        self._rows[name] += rows
        self._sizes[name] += len(data)


def append_bytes(path: Path, data: bytes) -> None:
    """Append `data` to the regular file `path` (never through a link) and fsync it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        fault = environment_error(err, path)
        raise fault or ResflowError(f"cannot append to {str(path)!r}: {err.strerror or err}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as err:
        fault = environment_error(err, path)
        if fault is not None:
            raise fault from None
        raise
    finally:
        os.close(fd)


def clean_beside(path: Path) -> None:
    """Remove what a killed `write_run` of `path` left beside it: its staging dir
    `.<name>.staging-<pid>-*`, and a replaced result `.<name>.old-<pid>` (put back if `path` itself is
    missing: killed in the middle of the swap), for every <pid> that is no longer running."""
    path = Path(path)
    for entry in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        kind, _, rest = entry.name[len(path.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("staging", "old") or not pid.isdigit() or pid_alive(int(pid)) or not entry.is_dir() or entry.is_symlink():
            continue
        if kind == "old" and not path.exists():
            os.replace(entry, path)
        else:
            shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading


def table_path(path: Path, name: str) -> Path | None:
    """Where table `name` of results dir `path` is: its .parquet when there is one and pyarrow can
    read it (the faster read; the same values), else its .csv; None when it has neither."""
    parquet, csv = Path(path) / f"{name}.parquet", Path(path) / f"{name}.csv"
    if parquet.is_file() and (not csv.is_file() or _have_pyarrow()):
        return parquet
    return csv if csv.is_file() else None


def _have_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def read_table(path: Path, size: int | None = None) -> pd.DataFrame:
    """One results table, from its .csv or .parquet file (a .csv's first `size` bytes if given:
    an appended table's length meta.json vouches for)."""
    path = Path(path)
    if size is not None and path.suffix == ".csv":
        import io

        with open(path, "rb") as fh:
            return read_csv(io.BytesIO(fh.read(size)))
    if path.suffix == ".parquet":
        if not _have_pyarrow():
            raise ConfigError(f'{str(path)!r}: reading it needs pyarrow: pip install "resflow[parquet]"')
        return read_parquet(path)
    return read_csv(path)


def is_results_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and all(table_path(path, t) is not None for t in ("grads", "summary"))


def read_run(path: Path) -> RunResult:
    """Read a results dir back (for `show` and `plot`); a clear error if it is not one."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{str(path)!r} does not exist")
    if not is_results_dir(path):
        raise ConfigError(f"{str(path)!r} is not a resflow results dir (no grads and summary .csv or .parquet in it)")
    files = {name: table_path(path, name) for name in TABLES}
    try:
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        size = appended_sizes(meta, files)
        grads = read_table(files["grads"], size.get("grads"))
        summary = read_table(files["summary"], size.get("summary"))
        params = read_table(files["params"], size.get("params")) if files["params"] else pd.DataFrame(columns=PARAMS_COLUMNS)
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
        train = read_table(files["train"], size.get("train")) if files["train"] else None
        hist = read_table(files["hist"], size.get("hist")) if files["hist"] else None
    except (OSError, ValueError, yaml.YAMLError, pd.errors.ParserError) as err:  # (UnicodeDecodeError: a ValueError)
        raise ResflowError(f"{str(path)!r}: cannot read the results: {str(err).splitlines()[0] if str(err) else err}") from None
    except ImportError as err:  # a broken pyarrow
        raise ResflowError(f"{str(path)!r}: cannot read the Parquet tables: {err}") from None
    missing = [c for c in ("variant", "seed", "layer", "input_grad_norm") if c not in grads.columns]
    if missing:
        raise ConfigError(f"{str(files['grads'])!r} lacks the columns {', '.join(missing)}: not a resflow results file")
    tables = {"grads": grads, "params": params, "summary": summary, "train": train, "hist": hist}
    if isinstance(meta, dict) and isinstance(meta.get("files"), dict):
        verify_files(path, meta["files"], tables)
    _check_keys(files["grads"], grads, ("variant", "seed", "layer"), ("seed", "layer", "input_grad_norm"))
    _check_keys(files["summary"], summary, ("variant", "seed"), ())
    return RunResult(
        grads=grads, params=params, summary=summary, config=config or {}, meta=meta, path=path, train=train, hist=hist
    )


def appended_sizes(meta, files: dict) -> dict[str, int]:
    """{table: bytes} for the .csv tables meta.json records with a length (`bytes`: tables grown by
    AppendedRun): what is read of them. Bytes beyond it are an append that a crash (kill -9) cut
    off before meta.json vouched for it; the rows before are the last complete flush's."""
    records = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(records, dict):
        return {}
    out = {}
    for name, file in files.items():
        record = records.get(f"{name}.csv")
        if file is not None and file.suffix == ".csv" and isinstance(record, dict):
            size = record.get("bytes")
            if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                out[name] = size
    return out


def verify_files(path: Path, records: dict, tables: dict) -> None:
    """Each file meta.json vouches for must be there with the bytes (sha256) and rows written; a
    mismatch is a one-line ConfigError naming the file: edited, truncated or damaged since."""
    for name, record in records.items():
        if name not in RECORDED or not isinstance(record, dict):
            continue
        file = Path(path) / name
        table_name = RECORDED[name]
        if (
            not file.is_file()
            and table_name
            and any((Path(path) / f"{table_name}.{ext}").is_file() for ext in ("csv", "parquet"))
        ):
            continue  # written in both formats, one of them removed since: the other is read (and checked)
        if not file.is_file():
            raise ConfigError(f"{str(file)!r} is missing: meta.json records it as written; the results dir is incomplete")
        table = tables.get(RECORDED[name]) if RECORDED[name] else None
        rows = record.get("rows")
        if table is not None and rows is not None and len(table) != rows:
            raise ConfigError(
                f"{str(file)!r} holds {len(table)} rows but {rows} were written (meta.json): "
                "it was truncated or edited; rerun to write it again"
            )
        size = record.get("bytes") if isinstance(record.get("bytes"), int) else None
        if size is not None and file.stat().st_size < size:
            raise ConfigError(
                f"{str(file)!r} holds {file.stat().st_size} bytes but {size} were written (meta.json): "
                "it was truncated; rerun to write it again"
            )
        if record.get("sha256") and file_sha256(file, size) != record["sha256"]:
            raise ConfigError(
                f"{str(file)!r} is not what resflow wrote (its sha256 differs from meta.json's): "
                "it was edited or damaged; rerun to write it again"
            )


def _check_keys(file: Path, df: pd.DataFrame, keys: tuple, numeric: tuple) -> None:
    """Rows a table cannot be read without: every key present, the numeric columns numbers (a results
    dir from before meta.json recorded its files is checked this far)."""
    for col in keys:
        if col in df.columns and df[col].isna().any():
            row = int(df[col].isna().to_numpy().argmax()) + 2  # the header is line 1
            raise ConfigError(f"{str(file)!r} line {row}: no value for {col!r}: the file is damaged or was edited")
    for col in numeric:
        if col in df.columns and df[col].dtype.kind not in "fiub":
            bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
            if not bad.any():
                continue
            row = int(bad.to_numpy().argmax()) + 2
            raise ConfigError(
                f"{str(file)!r} line {row}: {col} is {df[col].iloc[row - 2]!r}, not a number: the file is damaged or was edited"
            )
