"""The benchmark suite still runs (`python -m benchmarks --quick`); timings are never asserted here."""

import csv
import json

from benchmarks.run import main


def test_quick_benchmarks_run_and_write_their_table(tmp_path, capsys):
    assert main(["--quick", "--only", "recording,seeds,csv", "--out", str(tmp_path)]) == 0  # --device auto: the CPU here
    data = json.loads((tmp_path / "results.json").read_text())
    targets = [row["target"] for row in data["rows"]]
    assert any("recording, MLP: resflow" in t for t in targets) and any("no hooks (the floor)" in t for t in targets)
    assert any("seeds batched" in t for t in targets)
    assert any("grads.csv rows" in t for t in targets)
    csv_rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["target"] for r in csv_rows] == targets
    # the CSV round-trip check inside the benchmark is a correctness check, so it must hold
    assert "floats round-trip exactly: True" in next(r for r in data["rows"] if "grads.csv" in r["target"])["detail"]
    assert "resflow benchmarks" in capsys.readouterr().out


def test_device_option(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --device cuda is valid here")
    assert main(["--quick", "--only", "recording", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda: no CUDA device is available" in err  # one line
    assert not (tmp_path / "results.json").exists()
    assert main(["--quick", "--only", "csv", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["device"] == "cpu"


def test_interleaved_waits_for_the_device_before_each_clock_stops():
    from benchmarks.run import interleaved

    events = []
    interleaved(
        {"a": lambda: events.append("a"), "b": lambda: events.append("b")},
        repeats=2,
        warmup=1,
        sync=lambda: events.append("sync"),
    )
    # warm-up (one sync after it), then every timed call followed by a sync
    assert events == ["a", "b", "sync", "a", "sync", "b", "sync", "a", "sync", "b", "sync"]


def test_the_export_benchmark_runs_and_old_and_new_exporters_agree(tmp_path):
    """`--only export` (issue 25): its before/now row checks that both exporters write the same events."""
    assert main(["--quick", "--only", "export", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (
        "6,102 scalars, 40 histograms" in next(r for r in rows if "grads rows (" in r["target"])["detail"]
    )  # 3 × 2,000 + 2 × 51
    assert "the same events: True" in next(r for r in rows if "before / now" in r["target"])["detail"]


def test_sweep_scale_benchmark_runs(tmp_path, capsys):
    from benchmarks.sweep_scale import main as sweep_scale

    assert sweep_scale(["--sizes", "tiny", "--formats", "csv,parquet", "--out", str(tmp_path / "s.json")]) == 0
    recorded = json.loads((tmp_path / "s.json").read_text())[0]["rows"]
    assert [(r["size"], r["format"], r["side"]) for r in recorded] == [("tiny", "csv", "new"), ("tiny", "parquet", "new")]
    assert all(r["wall"] > 0 and r["parent_rss"] > 0 and r["sizes"]["points/ files"] == 3 for r in recorded)
    assert "| tiny runs | csv | new |" in capsys.readouterr().out


def test_page_is_the_table_with_machine_and_commit(tmp_path, capsys):
    """--page writes docs/performance.md: every row of results.json, the command, the machine, the commit."""
    page = tmp_path / "performance.md"
    assert main(["--quick", "--only", "csv", "--out", str(tmp_path), "--page", str(page)]) == 0
    text = page.read_text()
    data = json.loads((tmp_path / "results.json").read_text())
    for row in data["rows"]:
        assert f"| {row['target']} | {row['measured']:.3g} {row['unit']} |" in text
    assert "`python -m benchmarks --quick --only csv" in text and "at commit " in text
    assert f"{data['meta']['cpus']} CPUs" in text and "--quick: small sizes" in text
    assert text.count("| target | measured |") == 1  # one table
