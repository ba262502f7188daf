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
        table = pd.DataFrame({"seed": list(range(n)), "layer": list(range(n)), "sublayer": ["block"] * n, "input_grad_norm": [0.5] * n, "c": c})
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
def test_lines_made_in_any_order_equal_the_whole_table(tmp_path, values, order):
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
        assert runner.stream_tables(out, plan, asm, "csv") is None or asm.layout("grads", plan) != segments.layouts.get(
            "grads"
        )
        return
    rows, _ = written
    for name in ("grads", "params"):
        assert (out / f"{name}.csv").read_bytes() == whole[name].to_csv(index=False).encode(), name
        assert rows[name] == len(whole[name])


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
