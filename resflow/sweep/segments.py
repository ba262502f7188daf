"""A sweep's CSV tables made while its points run: the points' rows formatted as they arrive.

Formatting the rows (millions of floats as text) was most of the serial tail after the last point:
here the lines of grads.csv, params.csv (and train.csv) are made in this process as the points come
back from the workers, while the workers run the others (a batch of BATCH_ROWS rows at a time), and
appended to a spill file beside the tables (`.grads.csv.segments-<pid>.tmp`: a temp file, removed
at the end), each point's lines at a known place. When every point is in, each table is its header
and the points' lines in point order, copied from the spill file by the kernel; only the points
that have none (found finished by --resume, or of another layout) are formatted then.

A point's lines are made in the table's layout as that point alone would have it (its columns, and
each column's dtype from its own values); they are used only if the whole table's layout
(`Assembly.layout`) is that one, which is what every point of an ordinary sweep has. Otherwise (a
point with other columns, ints beside missing values...) the tables are streamed from the point
files as before (`stream_tables`): the bytes are the same either way, only the time differs.
"""

from __future__ import annotations

import os
from pathlib import Path

from resflow._sys.locks import pid_alive
from resflow.sweep.plan import Plan
from resflow.sweep.points import (
    CHUNK_ROWS,
    STREAMED,
    Assembly,
    NotStreamable,
    chunk_column,
    chunk_columns,
    chunk_rows,
    damaged_error,
    layout_of,
    read_point,
    value_tag,
    value_tags,
)

PROFILE_COLUMNS = ("variant", "step", "layer", "sublayer", "input_grad_norm")  # what profile_medians reads
BATCH_ROWS = 5_000  # rows of a table formatted together as points arrive (what is left is formatted at the end)


class Segments:
    """Each point's CSV lines of the streamed tables, made as the point arrives (`add`), and the
    tables written from them at the end (`write`). Use as a context manager: the spill files go
    when the block ends, however it ends.

        with Segments(out, plan) as segments:
            ...  segments.add(index, payload) for each point as it finishes
            rows, profiles = segments.write(asm, hint) or stream_tables(...)
    """

    def __init__(self, out: Path, plan: Plan) -> None:
        self.out, self.plan = Path(out), plan
        self.layouts: dict[str, tuple] = {}  # table -> the layout its lines are made in (the first point's)
        self.spans: dict[str, dict[int, tuple[int, int]]] = {name: {} for name in STREAMED}  # point -> (offset, bytes)
        self.profiles: dict = {}  # variant -> its profile (profile_medians), for the points with lines
        self._files: dict[str, int] = {}  # table -> the spill file's descriptor
        self._paths: dict[str, Path] = {}
        self._sizes: dict[str, int] = {}
        self._own: dict[tuple, tuple | None] = {}  # (table, columns, kinds) -> a point's own layout
        self._waiting: dict[str, list[tuple[int, dict]]] = {name: [] for name in STREAMED}  # (index, part): not formatted yet
        self._held = dict.fromkeys(STREAMED, 0)  # their rows
        self.broken = False  # a spill file could not be written: no lines (`write` returns None)

    def __enter__(self) -> "Segments":
        remove_stale(self.out)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        self._files.clear()
        self._paths.clear()

    def add(self, index: int, payload: dict) -> None:
        """Make the lines of a point's tables (decoded: `_payload`), if they are in the layout every
        point has had so far. A spill file that cannot be written (a full disk) ends the lines: the
        tables are then streamed from the point files at the end, which says what is wrong."""
        if self.broken:
            return
        try:
            self._add(index, payload)
        except (OSError, NotStreamable):  # (NotStreamable: a profile's values past int64)
            self.close()
            self.broken = True

    def _add(self, index: int, payload: dict) -> None:
        for name in STREAMED:
            part = payload.get(name)
            if part is None or not part["n"]:
                continue
            layout = self._own_layout(name, part)
            if layout is None:
                continue
            if self.layouts.setdefault(name, layout) != layout:
                continue  # formatted at the end, in the whole table's layout
            self._waiting[name].append((index, part))
            self._held[name] += part["n"]
            if self._held[name] >= BATCH_ROWS:
                self._format(name)

    def _format(self, name: str) -> None:
        """The waiting points' lines of table `name`, their columns formatted together (a batch
        costs ~20% less than a point at a time), each point's rows then joined into its own lines."""
        from resflow.results.csvtext import csv_cells, csv_lines
        from resflow.results.stats import profile_medians

        waiting, layout = self._waiting[name], self.layouts.get(name)
        if not waiting:
            return
        parts = [part for _, part in waiting]
        try:
            cells = csv_cells(chunk_columns(parts, *layout))
        except NotStreamable:  # (values past int64: these points are formatted at the end, or not streamed)
            cells = None
        start = 0
        for index, part in waiting:
            stop = start + part["n"]
            if cells is not None:
                self._append(name, index, csv_lines(cells, start, stop).encode("utf-8"))
            else:
                try:
                    self._append(name, index, chunk_rows([part], *layout))
                except NotStreamable:
                    pass
            start = stop
        if name == "grads":
            self.profiles.update(profile_medians(_profile_frame(parts, layout)))
        waiting.clear()
        self._held[name] = 0

    def _own_layout(self, name: str, part: dict):
        """The layout of table `name` were this point the only one (cached by its columns and kinds)."""
        order = tuple(part["order"])
        kinds = tuple(
            frozenset(value_tags(part["cols"][c])) if c in part["cols"] else frozenset(value_tag(part["const"][c])) for c in order
        )
        key = (name, order, kinds)
        if key not in self._own:
            self._own[key] = layout_of(
                name, [order], dict(zip(order, map(set, kinds))), dict.fromkeys(order, 1), self.plan.columns
            )
        return self._own[key]

    def _append(self, name: str, index: int, data: bytes) -> None:
        from resflow.results.files import write_pieces

        if name not in self._files:
            path = self.out / f".{name}.csv.segments-{os.getpid()}.tmp"
            self._files[name] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
            self._paths[name] = path
            self._sizes[name] = 0
        write_pieces(self._files[name], data)
        self.spans[name][index] = (self._sizes[name], len(data))
        self._sizes[name] += len(data)

    def write(self, asm: Assembly, hint: str = "") -> tuple[dict[str, int], dict] | None:
        """Write the streamed tables (CSV) from the lines made, formatting those of the points that
        have none; their rows and each point's profile, as `stream_tables` returns them. None (nothing
        written) when a table's layout is not the one its lines were made in."""
        if self.broken:
            return None
        names = [name for name in STREAMED if asm.orders[name]]
        layouts = {name: asm.layout(name, self.plan) for name in names}
        if any(layouts[name] is None or layouts[name] != self.layouts.get(name, layouts[name]) for name in names):
            return None
        if any(len(layouts[name][0]) < 2 for name in names):  # (csvtext's header: two columns or more)
            return None
        try:
            for name in STREAMED:
                self._format(name)  # (the last points')
        except (OSError, NotStreamable):
            self.close()
            self.broken = True
            return None
        profiles = dict(self.profiles)
        try:
            for name in names:
                self._write_table(name, asm, layouts[name], profiles, hint)
        except NotStreamable:  # a resumed point's values past int64, say: streamed (or assembled) as before
            return None
        rows = {name: asm.rows[name] for name in names}
        return rows, {p.variant: profiles[p.variant] for p in self.plan.points if p.variant in profiles}

    def _write_table(self, name: str, asm: Assembly, layout: tuple, profiles: dict, hint: str) -> None:
        """Table `name`'s CSV: its header, then each point's lines in point order (copied from the
        spill file, or formatted now, a chunk of points at a time, from the point files)."""
        from resflow.results.csvtext import header
        from resflow.results.files import atomic_file, write_pieces
        from resflow.results.stats import profile_medians

        columns, dtypes = layout
        spans, spill = self.spans[name], self._files.get(name)
        with atomic_file(self.out / f"{name}.csv") as fh:
            fd = fh.fileno()
            write_pieces(fd, header(columns).encode("utf-8"))
            batch: list[dict] = []

            def flush() -> None:
                if batch:
                    if name == "grads":
                        profiles.update(profile_medians(_profile_frame(batch, layout)))
                    write_pieces(fd, chunk_rows(batch, columns, dtypes))
                    batch.clear()

            held = 0
            for point in self.plan.points:
                if point.index not in asm.orders[name]:
                    continue
                if point.index in spans:
                    flush()
                    held = 0
                    _copy(spill, fd, *spans[point.index])
                    continue
                payload = read_point(self.out, point)
                if payload is None:
                    raise damaged_error(self.out, point, hint)
                batch.append(payload[name])
                held += payload[name]["n"]
                if held >= CHUNK_ROWS // 2:  # (as `stream_tables`' chunks: its CHUNK_ROWS are of two tables)
                    flush()
                    held = 0
            flush()


def _profile_frame(parts: list[dict], layout: tuple):
    """The columns `profile_medians` reads of these grads parts, as one frame."""
    import pandas as pd

    columns, dtypes = layout
    ns = [p["n"] for p in parts]
    data = {}
    for col in PROFILE_COLUMNS:
        if col in columns:
            pieces = [("cols", p["cols"][col]) if col in p["cols"] else ("const", p["const"].get(col)) for p in parts]
            data[col] = chunk_column(pieces, ns, dtypes[col])
    return pd.DataFrame(data)


def _copy(src: int, dst: int, offset: int, size: int) -> None:
    """`size` bytes of file `src` from `offset` appended to `dst` (in the kernel where it can)."""
    from resflow.results.files import write_pieces

    end = offset + size
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, min(end - offset, 1 << 30), offset)
        except (AttributeError, OSError):  # (not Linux, or a file system that cannot)
            done = 0
        if not done:
            while offset < end:
                data = os.pread(src, min(end - offset, 2 << 20), offset)
                if not data:
                    raise OSError(f"the spill file ended at {offset} bytes, before {end}")
                write_pieces(dst, data)
                offset += len(data)
            return
        offset += done


def remove_stale(out: Path) -> None:
    """Remove the spill files a sweep killed in `out` left (their process is gone)."""
    for path in Path(out).glob(".*.csv.segments-*.tmp"):
        pid = path.name.rsplit("-", 1)[1].removesuffix(".tmp")
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
