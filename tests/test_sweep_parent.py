"""The sweep's parent process (issue 29): its big writes in pieces, the tables' CSV text made while
the workers run, the pool's results collected in linear time, the terminal table drawn fast. Every
output is held to the bytes of the straightforward way of making it."""

import os

import numpy as np
import pandas as pd

import resflow.results.files as files
from resflow.results.csvtext import to_csv_text


def test_write_csv_in_pieces_writes_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "WRITE_PIECE", 1000)  # many pieces, cut mid-line
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=500), "w": ["a,b"] * 250 + ["é"] * 250, "k": np.arange(500)})
    files.write_csv(df, tmp_path / "t.csv")
    data = (tmp_path / "t.csv").read_bytes()
    assert len(data) > 10 * files.WRITE_PIECE
    assert data == df.to_csv(index=False).encode()
    fd = os.open(tmp_path / "p.bin", os.O_WRONLY | os.O_CREAT)
    blob = rng.bytes(12_345)
    files.write_pieces(fd, blob)
    os.close(fd)
    assert (tmp_path / "p.bin").read_bytes() == blob
    assert to_csv_text(df) == df.to_csv(index=False)


# ---------------------------------------------------------------------------------------------
# The tables' lines made as the points arrive (resflow/sweep/segments.py)

import pytest  # noqa: E402

import resflow.sweep.runner as runner  # noqa: E402
from resflow.sweep.plan import load_base, make_plan  # noqa: E402
from resflow.sweep.segments import Segments  # noqa: E402

SMALL = ["model.width=8", "data.batch_size=4", "seeds=3"]


def _in_memory(out, plan) -> dict[str, bytes]:
    """Every table assembled at once from the point files and written by pandas: the reference."""
    frames = runner.assemble(out, plan)
    return {name: frames[name].to_csv(index=False).encode() for name in runner.TABLES if frames[name] is not None}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_writes_its_tables_from_the_lines_made_as_points_arrived(tmp_path, monkeypatch, workers):
    import resflow.sweep.segments as segments_module

    monkeypatch.setattr(segments_module, "BATCH_ROWS", 50)  # several batches, cut between points
    base, axes = load_base("deep50", SMALL)
    plan = make_plan(base, axes, ["model.depth=1,2,5", "model.residual=false,true"])

    def not_streamed(*args, **kwargs):
        raise AssertionError("the tables were streamed from the point files, not written from the lines")

    monkeypatch.setattr(runner, "stream_tables", not_streamed)
    out = tmp_path / "s"
    done = runner.run_sweep(plan, out, workers=workers, fmt="csv")
    expected = _in_memory(out, plan)
    for name in ("grads", "params"):
        assert (out / f"{name}.csv").read_bytes() == expected[name], name
    assert (out / "summary.csv").read_bytes() == expected["summary"]
    assert not list(out.glob(".*"))  # the spill files are gone
    frames = runner.assemble(out, plan)
    from resflow.results.stats import profile_medians

    reference = profile_medians(frames["grads"])
    assert list(done.profiles) == list(reference)
    for variant, profile in reference.items():
        np.testing.assert_array_equal(done.profiles[variant], profile)
    assert done.result.grads.equals(files.read_csv(out / "grads.csv"))  # meta.json's checksums hold


def _points(tmp_path, values: list[list]):
    """A prepared sweep dir of len(values) points whose grads and params tables have a column `c` of
    these values (and a summary), their point files written: (out, plan, payload per point)."""
    base, axes = load_base("deep50", SMALL)
    plan = make_plan(base, axes, ["model.depth=" + ",".join(str(d + 1) for d in range(len(values)))])
    out = tmp_path / "s"
    runner.prepare_out(out, plan, resume=False, force=False)
    payloads = []
    for point, c in zip(plan.points, values):
        n = len(c)
        table = pd.DataFrame(
            {"seed": list(range(n)), "layer": list(range(n)), "sublayer": ["block"] * n, "input_grad_norm": [0.5] * n, "c": c}
        )
        summary = pd.DataFrame({"variant": [point.variant] * n, "seed": list(range(n)), "grad_ratio": [1.0] * n})
        text = runner.encode_point(point, {"grads": table, "params": table, "summary": summary})
        runner.save_point(out, point, text)
        payloads.append(runner._payload(text))
    return out, plan, payloads


CASES = [
    [[1, 2], [3, 4], [5, 6]],  # ints
    [[1, 2], [2.5, -0.0], [7, 8]],  # ints and floats: floats
    [[1.5, 2.0], [1, 2], [3, 4]],  # the first point's floats, the others' ints
    [[1, 2], [None, 3], [4, 5]],  # ints with a missing value: floats
    [[True, False], [False, False], [True, True]],
    [["x", "a,b"], [None, "y"], ['q"uote', "é"]],  # text (quoted), a missing value
    [[True, False], [None, True], [False, False]],  # bools with a missing value: objects (not streamed)
    [[1, 2], ["x", "y"], [3, 4]],  # numbers and text (not streamed)
    [[2**63 + 1, 1], [1, 2], [3, 4]],  # past int64: not typed ahead
]


@pytest.mark.parametrize("values", CASES)
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2)])  # (1, 2): point 0 found finished (resumed)
@pytest.mark.parametrize("batch_rows", [1, 3, 20_000])  # a point per batch, batches cut between points, one batch
def test_lines_made_in_any_order_equal_the_whole_table(tmp_path, monkeypatch, values, order, batch_rows):
    import resflow.sweep.segments as segments_module

    monkeypatch.setattr(segments_module, "BATCH_ROWS", batch_rows)
    out, plan, payloads = _points(tmp_path, values)
    asm = runner.Assembly()
    with Segments(out, plan) as segments:
        for i in sorted(set(range(len(values))) - set(order)):
            asm.add(i, payloads[i])  # (read from its point file by --resume: no lines made)
        for i in order:
            asm.add(i, payloads[i])
            segments.add(i, payloads[i])
        written = segments.write(asm)
        spills = list(out.glob(".*segments*"))
    assert not list(out.glob(".*segments*")) and (spills or written is None or not segments.spans["grads"])
    whole = {name: runner.table_frame(name, [p[name] for p in payloads], plan.columns) for name in ("grads", "params")}
    if written is None:  # the layout cannot be typed ahead, or is not the lines': nothing written
        assert not (out / "grads.csv").exists()
        assert runner.stream_tables(out, plan, asm, "csv") is None or asm.layout("grads", plan) != segments.layouts.get("grads")
        return
    rows, profiles = written
    for name in ("grads", "params"):
        assert (out / f"{name}.csv").read_bytes() == whole[name].to_csv(index=False).encode(), name
        assert rows[name] == len(whole[name])
    from resflow.results.stats import profile_medians

    reference = profile_medians(whole["grads"])  # (the lines' points' and the resumed point's)
    assert list(profiles) == list(reference) and all(np.array_equal(profiles[v], reference[v]) for v in reference)


def test_a_killed_sweeps_spill_files_are_removed(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "s"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = out / f".grads.csv.segments-{gone.pid}.tmp"
    live = out / f".grads.csv.segments-{os.getpid()}.tmp"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    with Segments(out, None):
        pass
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------------------------------------
# The terminal table: each group's rows drawn as one row of multi-line cells, cells measured directly


def _render(table, width: int, color: bool) -> str:
    import io

    from resflow.report.terminal.console import PlainConsole

    kw = {"force_terminal": True, "color_system": "truecolor"} if color else {}
    console = PlainConsole(file=io.StringIO(), width=width, **kw)
    console.print(table)
    return console.file.getvalue()


@pytest.mark.parametrize("color", [False, True])
def test_a_stacked_table_draws_the_same_characters_as_a_row_per_point(tmp_path, color):
    from rich.text import Text

    from resflow.report.terminal import sweep as terminal

    base, axes = load_base("deep50", SMALL)
    plan = make_plan(base, axes, ["model.depth=1,3,6", "model.init.scale=0.5,3"])
    done = runner.run_sweep(plan, tmp_path / "s", workers=1, fmt="csv")
    summary = done.summary.copy()
    summary.loc[summary["variant"] == plan.points[1].variant, ["grad_ratio", "finite"]] = [np.inf, False]
    stats = terminal.point_stats(summary, plan.columns)
    sparks, scale = terminal.profile_sparklines(profiles=done.profiles)
    rows, sections = terminal._sweep_rows(stats, plan.columns, 3, True, sparks)
    assert sections and any(isinstance(r["flag"], Text) and r["flag"].style for r in rows)
    rows[2]["bar"] = ""  # an empty cell inside a group, one at the end of a group
    rows[-1]["0 → L"] = ""
    rows[0]["flag"] = Text("wide 界", style="bold red")
    for spread, log10, theory in [(True, True, True), (False, False, False)]:
        shape = (3, spread, log10, theory, sparks, scale)
        one_per_point = terminal._sweep_table(rows, sections, plan.columns, "title", *shape)
        stacked = terminal._sweep_table(rows, sections, plan.columns, "title", *shape, stacked=True)
        assert len(stacked.rows) == len(sections) + 1 < len(one_per_point.rows) == len(rows)
        assert _render(stacked, 400, color) == _render(one_per_point, 400, color)
    assert terminal._stackable(rows)
    assert not terminal._stackable([*rows[:-1], {**rows[-1], "depth": "a\nb"}])  # a two-line cell: a row per point


def test_sweep_table_stacks_only_what_fits(tmp_path, monkeypatch):
    from resflow.report.terminal import sweep as terminal

    base, axes = load_base("deep50", SMALL)
    plan = make_plan(base, axes, ["model.depth=1,3", "model.init.scale=0.5,3"])
    done = runner.run_sweep(plan, tmp_path / "s", workers=1, fmt="csv")
    asked = []
    real = terminal._sweep_table
    monkeypatch.setattr(terminal, "_sweep_table", lambda *a, **kw: asked.append(kw.get("stacked")) or real(*a, **kw))
    for width, stacked in [(None, False), (400, True), (30, False)]:  # (30: nothing fits, Rich wraps the cells)
        asked.clear()
        terminal.sweep_table(done.summary, plan.columns, title="t", width=width, profiles=done.profiles)
        assert asked[-1] is stacked, width


@pytest.mark.parametrize(
    "cell",
    ["1.5e-03", "", "界界 wide", "x\ty", "a\nb", ":fire:", "\x1b[31mred", "tab\u2028sep", "[bold]x[/bold]", "…"],
)
def test_a_cell_is_measured_as_rich_measures_it(cell):
    from rich.measure import Measurement
    from rich.text import Text

    from resflow.report.terminal.console import PlainConsole
    from resflow.report.terminal.sweep import _cell_width

    console = PlainConsole(width=10_000)
    for c in (cell, Text(cell, style="red")):
        assert _cell_width(console, console.options, c) == Measurement.get(console, console.options, c).maximum, repr(c)


def test_a_spill_file_that_cannot_be_written_leaves_the_tables_to_the_stream(tmp_path, monkeypatch):
    """A full disk under the spill files: the sweep goes on, its tables streamed from the point
    files at the end (the same bytes), no spill file left."""
    import errno

    import resflow.sweep.segments as segments_module

    monkeypatch.setattr(segments_module, "BATCH_ROWS", 1)
    real = Segments._append
    calls = []

    def append(self, name, index, data):
        calls.append(index)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, index, data)

    monkeypatch.setattr(Segments, "_append", append)
    streamed = []
    monkeypatch.setattr(runner, "stream_tables", lambda *a, **kw: streamed.append(1) or real_stream(*a, **kw))
    base, axes = load_base("deep50", SMALL)
    plan = make_plan(base, axes, ["model.depth=1,2,3,4"])
    out = tmp_path / "s"
    runner.run_sweep(plan, out, workers=1, fmt="csv")
    assert len(calls) == 3 and streamed  # (broken at the third point's lines: the rest streamed)
    expected = _in_memory(out, plan)
    for name in ("grads", "params", "summary"):
        assert (out / f"{name}.csv").read_bytes() == expected[name], name
    assert not list(out.glob(".*"))


real_stream = runner.stream_tables
