"""The benchmark suite still runs (`python -m benchmarks --quick`); timings are never asserted here."""

import csv
import json
import re

import pytest

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


def test_page_keeps_the_sections_other_benchmarks_write(tmp_path):
    """--page rewrites the intro and the table only: the page's later sections (sweeps at scale,
    written by benchmarks.sweep_scale) stay as they were (they were lost before)."""
    page = tmp_path / "performance.md"
    later = "\n## Sweeps at scale\n\n<!-- sweep-scale:start -->\nkept | 1 |\n<!-- sweep-scale:end -->\n"
    page.write_text("# Performance\n\nold intro\n\n## The table\n\n| old | table |\n" + later)
    assert main(["--quick", "--only", "csv", "--out", str(tmp_path), "--page", str(page)]) == 0
    text = page.read_text()
    assert text.endswith(later) and "| old | table |" not in text and "old intro" not in text
    assert text.count("## The table") == 1


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


def test_watch_overhead_writes_its_tables_between_the_markers_and_nothing_else(tmp_path, capsys):
    """--write-docs: the page's section between the markers becomes the measured tables, with the
    command, commit, machine and load; each ratio is the one printed to the terminal; the rest of
    the page is left as it was, and a page without the markers is refused."""
    from benchmarks import pages, watch_overhead

    start, end = pages.markers(watch_overhead.SECTION)
    page = tmp_path / "page.md"
    before, after = "# Page\n\nText before.\n\n", "\n\nText after.\n"
    page.write_text(f"{before}{start}\nan old table\n{end}{after}")
    args = ["--models", "mlp", "--rounds", "1", "--steps", "2", "--write-docs", str(page)]
    assert watch_overhead.main(args) == 0
    printed = dict(re.findall(r"^  (\S.*?)\s+[\d.]+ ms/step  ([\d.]+)x bare$", capsys.readouterr().out, re.M))
    text = page.read_text()
    assert text.startswith(before + start + "\n") and text.endswith(end + after)
    assert "an old table" not in text
    assert f"`python -m benchmarks.watch_overhead {' '.join(args)}` at commit " in text
    assert "CPUs, " in text and "load average " in text and "threads; 1 rounds of 2 steps" in text
    tabled = dict(re.findall(r"^\| (.+?) \| [\d.]+ \| ([\d.]+) \|$", text, re.M))
    assert set(printed) == {"bare", *tabled} and len(tabled) == 5
    assert all(tabled[name] == printed[name] for name in tabled)
    assert "Targets: every=10 " in text

    page.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="no <!-- watch-overhead:start -->"):
        watch_overhead.main(args)
    assert page.read_text() == "# no markers\n"


def test_watch_long_writes_what_it_prints_between_the_markers(tmp_path, capsys):
    """--write-docs: the section is what the benchmark printed (each window, the RSS growth, the
    total gradient norm's cost), headed by the command, commit, machine and load."""
    from benchmarks import pages, watch_long

    start, end = pages.markers(watch_long.SECTION)
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n{start}\nold figures\n{end}\n\nText after.\n")
    args = [
        "--models",
        "mlp",
        "--steps",
        "30",
        "--window",
        "5",
        "--starts",
        "2,20",
        "--memory",
        "false",
        "--write-docs",
        str(page),
    ]
    assert watch_long.main(args) == 0
    out = capsys.readouterr().out
    text = page.read_text()
    assert text.startswith(f"# Page\n\n{start}\n`python -m benchmarks.watch_long {' '.join(args)}` at commit ")
    assert text.endswith(f"\n```\n{end}\n\nText after.\n") and "old figures" not in text
    fenced = text[text.index("```text\n") + len("```text\n") : text.rindex("\n```\n")]
    assert "steps 2-6: " in fenced and "steps 20-24: " in fenced and "total gradient norm at every step" in fenced
    printed = out.splitlines()
    assert all(line in printed for line in fenced.splitlines())  # the very lines it printed
