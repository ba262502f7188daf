"""A sweep's final tables streamed from its point files (issue 29): the same bytes as the tables
assembled in memory, Parquet equal to the CSV; the vectorised terminal statistics equal to the
per-point ones."""

import io
import math

import numpy as np
import pandas as pd
import pytest

import resflow.sweep.points as point_files
import resflow.sweep.runner as runner
from resflow.report.terminal.sweep import point_stats, point_stats_reference
from resflow.results.csvtext import to_csv_text
from resflow.results.files import read_csv, read_parquet
from resflow.results.stats import profile_medians, site_stats
from resflow.sweep.plan import load_base, make_plan

SMALL = ["model.width=8", "data.batch_size=4", "seeds=3"]


def _sweep(tmp_path, monkeypatch, over, sets=(), fmt="both", chunk_rows=7, config="deep50"):
    monkeypatch.setattr(runner, "CHUNK_ROWS", chunk_rows)  # many chunks, cut mid-table
    base, axes = load_base(config, [*SMALL, *sets])
    plan = make_plan(base, axes, over)
    done = runner.run_sweep(plan, tmp_path / "s", workers=1, fmt=fmt)
    return plan, done


@pytest.mark.parametrize(
    "config, over, sets",
    [
        ("deep50", ["model.depth=1,2,5", "model.residual=false,true"], []),
        ("train50-plain", ["model.depth=2,3"], ["train.steps=2"]),  # a train table; params' training columns
    ],
    ids=["measure", "train"],
)
def test_streamed_tables_equal_the_in_memory_ones_byte_for_byte(tmp_path, monkeypatch, config, over, sets):
    plan, done = _sweep(tmp_path, monkeypatch, over, sets, config=config)
    out = tmp_path / "s"
    assert done._result is None  # streamed, not the in-memory fallback
    frames = runner.assemble(out, plan)  # every point's rows at once, as the sweep assembled them before
    names = [n for n in runner.TABLES if frames[n] is not None]
    assert "train" in names if sets else "train" not in names
    for name in names:
        text = (out / f"{name}.csv").read_bytes()
        assert text == frames[name].to_csv(index=False).encode(), name  # pandas' own writer, the whole table
        assert text == to_csv_text(frames[name]).encode(), name
        pd.testing.assert_frame_equal(read_parquet(out / f"{name}.parquet"), read_csv(out / f"{name}.csv"), check_dtype=True)
    assert done.summary.equals(frames["summary"])
    assert done.result.grads.equals(read_csv(out / "grads.csv"))  # (read back on demand, checksums checked)


def test_point_files_resume_to_the_same_bytes(tmp_path, monkeypatch):
    plan, _ = _sweep(tmp_path, monkeypatch, ["model.depth=2,4"], fmt="csv", chunk_rows=100_000)
    out = tmp_path / "s"
    before = {n: (out / n).read_bytes() for n in ("grads.csv", "params.csv", "summary.csv")}
    for name in before:
        (out / name).unlink()
    done = runner.run_sweep(plan, out, workers=1, resume=True)
    assert done.ran == 0 and done.skipped == 2
    assert {n: (out / n).read_bytes() for n in before} == before


def _payload(table: dict[str, list]) -> dict:
    """A point payload whose grads/params/summary tables are `table` (as a worker's, all lists)."""
    part = {"n": len(next(iter(table.values()))), "order": list(table), "const": {}, "cols": table}
    return {
        "grads": point_files.decoded_part(part),
        "params": point_files.decoded_part(part),
        "summary": point_files.decoded_part(part),
    }


@pytest.mark.parametrize(
    "a, b, streams",
    [
        ([1, 2], [3, 4], True),  # ints
        ([1, 2], [2.5, -0.0], True),  # ints and floats: floats
        ([1, 2], [None, 3], True),  # ints with a missing value: floats
        ([True, False], [False, False], True),
        (["x", "a,b"], [None, "y"], True),  # text (quoted), a missing value
        ([True, False], [None, True], False),  # bools with a missing value: objects
        ([1, 2], ["x", "y"], False),  # numbers and text
    ],
)
def test_chunks_print_as_the_whole_column(a, b, streams):
    """Two points' rows written as two chunks: the text of the whole table (pandas types the whole
    column from every value), or not streamed at all."""
    points = [_payload({"seed": [0, 1], "c": a}), _payload({"seed": [2, 3], "c": b})]
    asm = runner.Assembly()
    for i, p in enumerate(points):
        asm.add(i, p)

    class Plan:  # the two points, no swept columns
        points = [type("P", (), {"index": i}) for i in range(2)]
        columns = []

    layout = asm.layout("params", Plan)
    assert (layout is not None) == streams
    whole = runner.table_frame("params", [p["params"] for p in points], [])
    assert list(whole["c"]) == [*a, *b] or whole["c"].isna().any()
    if streams:
        chunks = [to_csv_text(point_files.chunk_frame([p["params"]], *layout)) for p in points]
        assert chunks[0] + chunks[1].partition("\n")[2] == whole.to_csv(index=False)


def test_profile_medians_equal_site_stats():
    rng = np.random.default_rng(0)
    rows = []
    for variant, depth, steps in (("a", 3, (0,)), ("b", 5, (0, 4)), ("c", 2, (0,))):
        for step in steps:
            for seed in range(4):
                for layer in range(depth):
                    for sub in ("attn", "ffn"):
                        rows.append(
                            dict(
                                variant=variant, seed=seed, step=step, layer=layer, sublayer=sub, input_grad_norm=rng.lognormal()
                            )
                        )
    grads = pd.DataFrame(rows)
    grads.loc[[1, 7, 30], "input_grad_norm"] = [np.nan, np.inf, 0.0]  # non-finite values are left out
    grads.loc[grads["variant"] == "c", "input_grad_norm"] = np.nan  # no finite value at all: NaN
    got = profile_medians(grads)
    assert list(got) == ["a", "b", "c"]
    for variant, g in grads.groupby("variant", sort=False):
        expected = site_stats(g)["median"].to_numpy()  # the per-variant reference, step by step
        np.testing.assert_array_equal(got[variant], expected)


def test_point_stats_equal_the_per_point_reference():
    rng = np.random.default_rng(1)
    rows = []
    for point in range(6):
        for seed in range(5):
            ratio = float(rng.lognormal(-3, 2))
            rows.append(
                dict(
                    variant=f"v{point}",
                    seed=seed,
                    step=0,
                    depth=point + 1,
                    grad_ratio=ratio,
                    gain_per_layer=float(rng.uniform(0.5, 1.5)),
                    finite=True,
                    predicted_grad_ratio=0.1 * (point + 1),
                )
            )
    summary = pd.DataFrame(rows)
    summary.loc[summary["variant"] == "v1", "grad_ratio"] = np.nan  # 0/0 in every seed: no gradient
    summary.loc[7, "grad_ratio"] = np.nan  # one seed's 0/0
    summary.loc[12, ["grad_ratio", "finite"]] = [np.inf, False]  # a non-finite seed
    summary.loc[17, "gain_per_layer"] = np.nan  # one layer: no gain (the median is NaN)
    summary.loc[20, "grad_ratio"] = 0.0  # left out of log10 and the quartiles
    summary.loc[25:29, "grad_ratio"] = [1e-3, 2e-3, np.nan, np.nan, np.nan]  # two finite positive values
    got, expected = point_stats(summary, ["depth"]), point_stats_reference(summary, ["depth"])
    assert list(got.columns) == list(expected.columns)
    for col in got.columns:
        if got[col].dtype.kind == "f" or expected[col].dtype.kind == "f":
            np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-12, err_msg=col)
        else:
            assert list(got[col]) == list(expected[col]), col
    assert bool(got.loc[1, "no_gradient"]) and not math.isfinite(got.loc[1, "ratio"])


def test_sweep_table_from_profiles_equals_the_one_from_grads(tmp_path, monkeypatch):
    from rich.console import Console

    from resflow.report.terminal.sweep import sweep_table

    plan, done = _sweep(tmp_path, monkeypatch, ["model.depth=1,3,6"], fmt="csv")

    def text(**kw):
        console = Console(file=io.StringIO(), width=240)
        console.print(sweep_table(done.summary, plan.columns, title="t", width=240, **kw))
        return console.file.getvalue()

    from_profiles, from_grads = text(profiles=done.profiles), text(grads=done.result.grads)
    assert "0 → L" in from_profiles and from_profiles == from_grads


def _summarize_by_groupby(grads: pd.DataFrame, config_columns: list[str]) -> pd.DataFrame:
    """`summarize` as it was, one pandas group at a time: the reference the vectorised one must equal."""
    from resflow.results import stats

    rows, keys = [], ["variant", "seed", "step"]
    for key, group in grads.groupby(keys, sort=False):
        g = group["input_grad_norm"].to_numpy(dtype=float)
        i, j = stats.end_sites(group["layer"].to_numpy())
        first, last = float(g[i]), float(g[j])
        ratio = stats.ratio_of(first, last)
        row = dict(zip(keys, key))
        row.update(
            grad_first=first,
            grad_last=last,
            grad_ratio=ratio,
            log10_grad_ratio=math.log10(ratio) if ratio > 0 and math.isfinite(ratio) else float("nan"),
            gain_per_layer=stats.fitted_gain(stats.site_position(group), g),
            finite=bool(np.isfinite(group[["input_grad_norm", "activation_rms", "param_grad_norm"]].to_numpy(float)).all()),
        )
        row.update({c: group[c].iloc[0] for c in config_columns})
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        spread = {k: stats.seed_spread(g["grad_ratio"]) for k, g in out.groupby(["variant", "step"], sort=False)}
        for i, col in enumerate(stats.SPREAD_COLUMNS):
            out[col] = [spread[(v, s)][i] for v, s in zip(out["variant"], out["step"])]
    return out


def _grads(rng) -> pd.DataFrame:
    """Rows of two variants (a transformer's attn/ffn sites, an MLP's one), two steps, a config column."""
    rows = []
    for variant, subs, depth in (("t", ("attn", "ffn"), 3), ("m", ("mlp",), 4)):
        for step in (0, 5):
            for seed in (3, 1, 2):
                for layer in range(depth):
                    for sub in subs:
                        rows.append(
                            dict(
                                variant=variant,
                                seed=seed,
                                step=step,
                                layer=layer,
                                sublayer=sub,
                                input_grad_norm=float(rng.lognormal(layer, 1)),
                                activation_rms=1.0,
                                param_grad_norm=float(rng.lognormal()),
                                depth=depth,
                                norm=None if variant == "m" else "layernorm",
                            )
                        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("case", ["plain", "shuffled", "non-finite", "zero last", "missing key", "one row", "empty"])
def test_summarize_equals_the_groupby_reference(case):
    """The vectorised `summarize` (the workers' per-point statistics) gives the frame the per-group
    loop gave, dtypes and bits included, whatever the row order or the values."""
    from resflow.results.stats import summarize

    grads = _grads(np.random.default_rng(2))
    if case == "shuffled":  # groups interleaved: still first appearance, rows in their order
        grads = grads.sample(frac=1, random_state=0)
    elif case == "non-finite":
        grads.loc[grads.index[::5], "input_grad_norm"] = np.nan
        grads.loc[grads.index[7], "param_grad_norm"] = np.inf
    elif case == "zero last":  # 0/0 and x/0
        grads.loc[(grads["variant"] == "m") & (grads["layer"] == 3), "input_grad_norm"] = 0.0
        grads.loc[(grads["variant"] == "m") & (grads["seed"] == 1) & (grads["layer"] == 0), "input_grad_norm"] = 0.0
    elif case == "missing key":  # groupby drops the rows whose key is missing
        grads["variant"] = grads["variant"].astype(object)
        grads.loc[grads.index[:4], "variant"] = None
    elif case == "one row":
        grads = grads.iloc[:1]
    elif case == "empty":
        grads = grads.iloc[:0]
    expected = _summarize_by_groupby(grads, ["depth", "norm"])
    got = summarize(grads, ["depth", "norm"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=True, check_exact=True)
    if len(expected.columns):
        assert to_csv_text(got) == to_csv_text(expected)


def test_sweep_table_drops_columns_exactly_where_the_whole_table_stops_fitting(tmp_path, monkeypatch):
    """`sweep_table` measures each choice of columns from one row of their widest cells: at the
    whole table's own natural width it is kept, one column narrower the next choice is taken, at
    every step (so the one-row measure equals Rich's measure of the whole table)."""
    from resflow.report.terminal.run import natural_width
    from resflow.report.terminal.sweep import sweep_table

    plan, done = _sweep(tmp_path, monkeypatch, ["model.depth=1,3,12", "model.init.scale=0.5,3"], fmt="csv")
    summary = done.summary.copy()
    summary.loc[summary["variant"] == plan.points[1].variant, ["grad_ratio", "finite"]] = [np.inf, False]

    def table(width):
        return sweep_table(summary, plan.columns, title="t", width=width, profiles=done.profiles)

    current = table(None)
    headers = [[str(c.header) for c in current.columns]]
    while True:
        w = natural_width(current)
        assert [str(c.header) for c in table(w).columns] == headers[-1]
        narrower = table(w - 1)
        if len(narrower.columns) == len(current.columns):  # the narrowest choice: kept, though too wide
            break
        assert len(narrower.columns) < len(current.columns) and natural_width(narrower) <= w - 1
        current = narrower
        headers.append([str(c.header) for c in current.columns])
    assert len(headers) >= 4  # the sparkline, min–max and IQR, log10 and its SD dropped in turn


def test_a_pool_worker_freezes_its_imports_after_its_first_point():
    """A worker's first point imports what every point needs; then the worker collects once and
    freezes what is left, so its full collections no longer walk torch's and pandas' objects. The
    process that started the sweep is left as it was; the point's text is the same either way."""
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    base, axes = load_base("deep50", SMALL)
    point = make_plan(base, axes, ["model.depth=2"]).points[0]
    before = gc.get_freeze_count()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(gc.get_freeze_count).result(timeout=120) == 0
        text = pool.submit(runner.run_point, point).result(timeout=120)
        frozen = pool.submit(gc.get_freeze_count).result(timeout=120)
    assert frozen > 10_000  # (torch's and pandas' modules, functions, classes)
    assert gc.get_freeze_count() == before
    assert text == runner.run_point(point)
    assert gc.get_freeze_count() == before
