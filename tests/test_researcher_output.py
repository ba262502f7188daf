"""Output a researcher reads (issue 28): piped tables whole, a trained compare's headline about what
was learnt, a factory model's depth sweep told as a depth sweep."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from clirunner import Runner

from resflow.cli.app import app

runner = Runner()
TRAIN = ["--set", "train.steps=4", "--set", "train.record_every=2", "--set", "model.depth=8", "--seeds", "1", "--no-plots"]


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def trained_compare(tmp_path_factory):
    """Two digits configs trained 4 steps side by side: a compare with a wide loss table."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("cmp") / "c"
    res = invoke("compare", "digits-plain20", "digits-res20", *TRAIN, "--out", out, env={"COLUMNS": None})
    assert res.exit_code == 0, res.output
    return out, res.stdout


def _loss_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("│ digits-") and "%" in line]


def test_piped_output_prints_the_whole_table(trained_compare):
    """Not a terminal and no COLUMNS: every column and caption whole (main cut them at 120 columns)."""
    out, text = trained_compare
    for shown in (text, invoke("show", out, env={"COLUMNS": None}).stdout):
        assert "test acc end" in shown and "loss start" in shown
        assert "a model that learnt nothing from its input" in " ".join(shown.split())
        rows = _loss_rows(shown)
        assert len(rows) == 2 and all(line.count("%") == 2 and line.rstrip().endswith("│") for line in rows)
        train = pd.read_csv(out / "train.csv")
        last = train[train["step"] == train["step"].max()]
        for variant, row in zip(("digits-plain20", "digits-res20"), rows):
            acc = float(last.loc[last["variant"] == variant, "eval_accuracy"].median())
            assert f"{acc:.1%}" in row


@pytest.mark.parametrize("columns", [220, 90])
def test_piped_output_honours_COLUMNS_and_never_cuts_a_cell(trained_compare, columns):
    out, _ = trained_compare
    shown = invoke("show", out, env={"COLUMNS": str(columns)}).stdout
    rows = _loss_rows(shown)
    assert len(rows) == 2 and all(line.count("%") == 2 and line.rstrip().endswith("│") for line in rows)
    header = next(line for line in shown.splitlines() if "variant" in line)
    if columns == 220:  # room for every column: the loss table fits in COLUMNS
        assert "loss start" in header and max(len(r) for r in rows) <= columns
    else:  # too narrow even without the optional columns: those go, the rest prints whole
        assert "loss start" not in header and "test acc end" in header


def test_trained_compare_headline_is_what_they_learnt_first(trained_compare):
    out, text = trained_compare
    train = pd.read_csv(out / "train.csv")  # the reference: train.csv's last step, read here
    last = train[train["step"] == train["step"].max()].groupby("variant")[["train_set_loss", "train_set_accuracy"]].median()
    best = last["train_set_loss"].idxmin()
    other = last.index[last.index != best][0]
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if "learnt the most" in line)
    assert lines[i].startswith(f"after 4 steps {best} learnt the most: final training-set loss")
    assert f"{last.loc[best, 'train_set_accuracy']:.1%}" in lines[i] and f"in {other}" in lines[i]
    assert "keeps the first-layer gradient closest" in lines[i + 1]  # the gradient sentence second


def test_untrained_compare_has_no_learnt_sentence(tmp_path):
    res = invoke(
        "compare",
        "deep50",
        "deep50-residual",
        "--set",
        "model.depth=4",
        "--set",
        "model.width=8",
        "--seeds",
        "1",
        "--no-plots",
        "--out",
        tmp_path / "c",
    )
    assert res.exit_code == 0, res.output
    assert "learnt" not in res.stdout and "keeps the first-layer gradient closest" in res.stdout


def test_factory_depth_sweep_is_told_and_drawn_as_a_depth_sweep(tmp_path):
    """`--over model.kwargs.depth=...` of a factory: depth.png and the per-layer fit sentence, like
    `--over model.depth=...` of a built-in model (main wrote neither)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "tiny", "model": {"factory": "test_factory:tiny_net", "kwargs": {"depth": 3}}, "data": {"shape": [4, 5]}}
        )
    )
    out = tmp_path / "sweep"
    res = invoke("sweep", path, "--over", "model.kwargs.depth=2,4,8", "--seeds", "2", "--workers", "1", "--out", out)
    assert res.exit_code == 0, res.output
    assert (out / "depth.png").exists()
    summary = pd.read_csv(out / "summary.csv")  # the reference: a fit of ln(median ratio) on depth, here
    med = summary.groupby("depth")["grad_ratio"].median()
    slope = np.polyfit(med.index.to_numpy(float), np.log(med.to_numpy(float)), 1)[0]
    line = next(line for line in res.stdout.splitlines() if "per added layer" in line)
    assert line.startswith("first/last-layer gradient") and f"×{math.exp(slope):.3g} per added layer" in line
    assert "at depth 2 →" in line and "at depth 8" in line
