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
    res = invoke(
        "sweep", path, "--over", "model.kwargs.depth=2,4,8", "--seeds", "2", "--workers", "1", "--out", out, "--allow-code"
    )
    assert res.exit_code == 0, res.output
    assert (out / "depth.png").exists()
    summary = pd.read_csv(out / "summary.csv")  # the reference: a fit of ln(median ratio) on depth, here
    med = summary.groupby("depth")["grad_ratio"].median()
    slope = np.polyfit(med.index.to_numpy(float), np.log(med.to_numpy(float)), 1)[0]
    line = next(line for line in res.stdout.splitlines() if "per added layer" in line)
    assert line.startswith("first/last-layer gradient") and f"×{math.exp(slope):.3g} per added layer" in line
    assert "at depth 2 →" in line and "at depth 8" in line


# ---------------------------------------------------------------------------------------------
# resflow.watch / resflow.record output


def _tiny(depth=4, width=8):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth)], nn.Linear(width, 1))


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A 200-step loop watched every 50 steps: the data feed block 0 directly (no input gradient there)."""
    import torch

    import resflow

    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = tmp_path_factory.mktemp("watch") / "w"
    gen = torch.Generator().manual_seed(1)
    with resflow.watch(model, every=50, out=out) as w:
        for _ in range(200):
            loss = model(torch.randn(16, 8, generator=gen)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            w.step(loss)
            opt.step()
    return w, out


def test_watch_loss_table_counts_steps_and_claims_no_evaluation(watched):
    """200 step() calls: 'steps 200' (main: 199), and no 'eval: held-out batches' caption or eval
    columns, since nothing was evaluated."""
    _, out = watched
    shown = invoke("show", out, env={"COLUMNS": None}).stdout
    row = next(line for line in shown.splitlines() if line.startswith("│ Sequential"))
    assert row.split("│")[2].strip() == "200"
    assert "held-out" not in shown and "eval start" not in shown and "nothing was evaluated" in " ".join(shown.split())


def test_watch_result_says_the_first_block_has_no_input_gradient(watched):
    """Block 0 is fed by the data (no gradient there): say so, and give the ratio from block 1 to the
    last (main printed 'nanx' and 'non-finite gradients')."""
    w, out = watched
    grads = pd.read_csv(out / "grads.csv")  # the reference: the CSV's own numbers at the last recorded step
    last = grads[grads["step"] == grads["step"].max()].sort_values("layer")
    assert last["input_grad_norm"].isna().tolist() == [True, False, False, False]
    ratio = float(last["input_grad_norm"].iloc[1]) / float(last["input_grad_norm"].iloc[-1])
    text = repr(w.result())
    assert "nan" not in text.lower() and f"layer 1/last {ratio:.3g}x" in text and "no input gradient" in text
    shown = invoke("show", out).stdout
    line = next(line for line in shown.splitlines() if "no gradient (fed by the data" in line)
    assert line.startswith("layer 0's input has no gradient") and "non-finite" not in line
    assert "layer 1 receives" in line and "layer 3" in line


def test_record_and_watch_results_are_labelled_as_such(watched):
    import resflow

    w, _ = watched
    assert repr(w.result()).startswith("<RunResult: resflow watch")
    assert repr(resflow.record(_tiny(), pytest.importorskip("torch").randn(4, 8))).startswith("<RunResult: resflow record")
    assert "resflow run" not in repr(w.result())


def test_watch_has_a_repr_and_a_notebook_view(watched):
    w, out = watched
    for text in (repr(w), w._repr_html_()):
        assert "resflow watch: Sequential, every 50 steps" in text and "200 so far, 4 recorded" in text
    assert w._repr_html_().startswith("<div>") and "object at 0x" not in repr(w)


def test_params_csv_names_each_parameter_module(tmp_path):
    """record/watch params.csv: a last column `module`, so module + '.' + param is the name in
    named_parameters(); checked against the model's own tensors and autograd."""
    import torch

    import resflow
    from resflow.results.files import write_run

    model = _tiny(depth=3)
    x = torch.randn(4, 8)
    result = resflow.record(model, x, loss=lambda out: out.sum())
    write_run(result, tmp_path / "r", force=False)
    header = (tmp_path / "r" / "params.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "module" and header[:-1] == ["variant", "seed", "step", "layer", "param", "grad_norm", "value_norm"]
    model.zero_grad()
    model(x).sum().backward()
    named = dict(model.named_parameters())
    rows = result.params
    assert len(rows) == len(named)
    for _, r in rows.iterrows():
        full = f"{r['module']}.{r['param']}" if r["module"] else r["param"]
        assert r["value_norm"] == pytest.approx(float(named[full].detach().norm()), rel=1e-6)
        assert r["grad_norm"] == pytest.approx(float(named[full].grad.norm()), rel=1e-6)


def test_builtin_params_csv_has_no_module_column(tmp_path):
    out = tmp_path / "r"
    assert (
        invoke(
            "run", "deep50", "--set", "model.depth=3", "--set", "model.width=4", "--seeds", "1", "--no-plots", "--out", out
        ).exit_code
        == 0
    )
    assert (out / "params.csv").read_text().splitlines()[0] == "variant,seed,step,layer,param,grad_norm,value_norm"


@pytest.mark.parametrize("config", ["digits-plain20", "digits-res20"])
def test_theory_on_a_conv_config_says_there_is_no_prediction_for_that_family(config):
    """main called a conv ResNet 'transformer (conv-norm, None FFN)'."""
    res = invoke("theory", config)
    assert res.exit_code == 0, res.output
    head, reason = res.stdout.strip().splitlines()
    assert "transformer" not in res.stdout and "None" not in res.stdout
    assert head.startswith(f"{config}: depth 20, width 8, conv ResNet, relu, ")
    assert reason.startswith("no prediction: resflow has no prediction for conv ResNets")


def test_step0_evaluation_of_a_batchnorm_net_uses_batch_statistics():
    """digits-res20 (BatchNorm): the step-0 test loss is that of the initial model normalising with
    the test set's own statistics (the reference: the same seed's model rebuilt here, in train mode),
    not of running statistics that have seen one batch (main: a loss of hundreds at depth 56)."""
    pytest.importorskip("sklearn")
    import torch
    import torch.nn.functional as F

    from resflow.config.loading import load_config
    from resflow.experiment import run
    from resflow.measure.data import model_io
    from resflow.measure.datasets import as_input, load
    from resflow.models import build_model
    from resflow.models.init import seed_rng

    cfg = load_config("digits-res56", ["seeds=1", "train.steps=1", "train.record_every=1", "model.width=4"])
    train = run(cfg).train
    at0 = train[train["step"] == 0].iloc[0]
    seed_rng(cfg.seed_list[0], torch.device("cpu"))
    model = build_model(cfg.model, device=torch.device("cpu"), dtype=torch.float32, io=model_io(cfg)).train()
    data = load(cfg.data.dataset)
    with torch.no_grad():
        logits = model(as_input(data.test_x, cfg.model.images).float())  # 359 examples: one chunk
    expected = float(F.cross_entropy(logits.double(), data.test_y))
    assert at0["eval_loss"] == pytest.approx(expected, rel=1e-5)
