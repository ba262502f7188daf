"""The `sequence` task (transformers): the chain's entropy rate against a closed form and an empirical
estimate, learning down to that floor, bit-for-bit determinism, update ratios against a hand replay,
train.csv's floor columns, and task/block mismatches as one-line errors."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from resflow.cli.app import app
from resflow.config.loading import load_config
from resflow.config.schema import TASK_NAMES
from resflow.experiment import run
from resflow.measure.data import data_generator
from resflow.models import build_model
from resflow.train.tasks import TASKS, SequenceTask, entropy, entropy_rate, stationary

runner = CliRunner()


def tiny(*overrides, **kw):
    base = dict(
        name="seq",
        seed=0,
        seeds=1,
        dtype="float64",
        model=dict(block="transformer", depth=1, width=16, heads=2, ffn_mult=2, residual=True, norm="pre"),
        data=dict(batch_size=16, seq_len=8),
        train=dict(steps=10, lr=1e-2, eval_batches=2, vocab=6),
    )
    base.update(kw)
    return load_config(base, list(overrides))


def h(p: float) -> float:  # binary entropy in nats
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def test_task_registry_matches_config_names():
    assert set(TASKS) == set(TASK_NAMES)


def test_two_state_chain_closed_form():
    # P = [[1-a, a], [b, 1-b]]: pi = (b, a)/(a+b), H = pi_0 h(a) + pi_1 h(b)
    a, b = 0.1, 0.3
    P = torch.tensor([[1 - a, a], [b, 1 - b]], dtype=torch.float64)
    pi = (b / (a + b), a / (a + b))
    np.testing.assert_allclose(stationary(P).numpy(), pi, rtol=1e-14)
    assert entropy_rate(P) == pytest.approx(pi[0] * h(a) + pi[1] * h(b), rel=1e-14)
    assert entropy(stationary(P)) == pytest.approx(h(pi[0]), rel=1e-14)
    # a deterministic cycle: H = 0 (0 ln 0 = 0, no NaN); a uniform chain: H = ln V
    assert entropy_rate(torch.roll(torch.eye(5, dtype=torch.float64), 1, dims=1)) == 0.0
    assert entropy_rate(torch.full((7, 7), 1 / 7, dtype=torch.float64)) == pytest.approx(math.log(7), rel=1e-14)


def test_entropy_rate_matches_an_empirical_estimate():
    """-mean ln P(x_{t+1} | x_t) over sampled sequences estimates H; the sequences are independent, so the
    spread of their means gives the standard error. Token frequencies at the first and last position
    match pi (the chain starts, and stays, stationary)."""
    cfg = tiny("train.vocab=8", "train.chain_temperature=0.4")
    gen = data_generator(11)
    task = SequenceTask(cfg, gen, torch.device("cpu"), torch.float64)
    n, length = 4000, 40
    x = task.sample(gen, n, length)
    logp = torch.log(task.P)[x[:, :-1], x[:, 1:]]  # (n, length - 1)
    per_seq = (-logp).mean(1).numpy()
    se = per_seq.std(ddof=1) / math.sqrt(n)
    assert abs(per_seq.mean() - task.floor) < 5 * se, (per_seq.mean(), task.floor, se)
    assert task.floor < task.baseline < math.log(8)  # the chain is predictable; the baseline is H(pi)
    pi = task.pi.numpy()
    for pos in (0, length - 1):
        freq = np.bincount(x[:, pos].numpy(), minlength=8) / n
        assert np.all(np.abs(freq - pi) < 5 * np.sqrt(pi * (1 - pi) / n)), (pos, freq, pi)


def test_loss_falls_to_the_floor():
    cfg = tiny("train.steps=150", "train.record_every=50", "train.lr=0.01", "train.eval_batches=4", "data.batch_size=32")
    tr = run(cfg).train
    floor, ln_v = tr["task_floor"].iloc[0], math.log(6)
    ev = tr["eval_loss"].dropna().to_numpy()
    # logits start small (std ~ 1/sqrt(width)), so the first loss is near a uniform guess's ln V
    assert ev[0] == pytest.approx(ln_v, abs=0.3)
    assert floor < ln_v - 0.8  # an easy chain: a wide gap to learn across
    assert ev[-1] - floor < 0.1, (ev, floor)  # ends near the floor ...
    assert ev[-1] < ln_v - 0.7 and ev[-1] < tr["task_baseline"].iloc[0] - 0.5  # ... far below a guess or the unigram


def test_sequence_training_is_bit_for_bit_and_leaves_the_global_rng_alone():
    cfg = tiny("seeds=2", "dtype=float32", "train.record_every=3")
    state = torch.get_rng_state()
    a = run(cfg)
    assert torch.equal(torch.get_rng_state(), state)  # init under fork_rng; task and embeddings from the data generator
    b = run(cfg)
    pd.testing.assert_frame_equal(a.train.drop(columns="wall_time_s"), b.train.drop(columns="wall_time_s"), check_exact=True)
    pd.testing.assert_frame_equal(a.grads, b.grads, check_exact=True)
    pd.testing.assert_frame_equal(a.params, b.params, check_exact=True)
    floors = a.train.groupby("seed")["task_floor"].agg(["min", "max"])
    assert (floors["min"] == floors["max"]).all() and floors["min"].nunique() == 2  # one chain per seed
    assert a.meta["task_floor"] == floors["min"].tolist() and len(a.meta["task_baseline"]) == 2


def test_transformer_update_ratio_matches_an_independent_replay():
    """Replay by hand: same seed, the task's batches, Adam over every parameter, the loss written out;
    snapshot one attention weight and the final norm around each update."""
    cfg = tiny("train.steps=8", "train.record_every=3", "train.warmup=4")
    p = run(cfg).params
    torch.manual_seed(0)
    stack = build_model(cfg.model, dtype=torch.float64)
    gen = data_generator(0)
    task = SequenceTask(cfg, gen, torch.device("cpu"), torch.float64)
    model = task.wrap(stack)
    for _ in range(cfg.train.eval_batches):
        task.batch(gen, 16)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    watched = {(0, "attn.q.weight"): stack.blocks[0].attn_res.f.q.weight, (1, "final_norm.weight"): stack.final_norm.weight}
    for step in range(cfg.train.steps):
        x, y = task.batch(gen, 16)
        opt.zero_grad()
        logits = stack(model.embed[x]) @ model.unembed.T  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, 6), y.reshape(-1)).backward()
        before = {k: w.detach().clone() for k, w in watched.items()}
        for g in opt.param_groups:
            g["lr"] = cfg.train.lr * min(1.0, (step + 1) / 4)
        opt.step()
        for (layer, name), w in watched.items():
            row = p[(p["step"] == step) & (p["layer"] == layer) & (p["param"] == name)]
            if step % 3:
                assert row.empty
                continue
            want = ((w.detach() - before[(layer, name)]).norm() / before[(layer, name)].norm()).item()
            assert want > 0 and row["update_ratio"].item() == pytest.approx(want, rel=1e-9), (step, name)


def test_teacher_rows_get_floor_and_baseline_too():
    cfg = load_config(
        dict(
            name="m", dtype="float64", model=dict(depth=2, width=4), data=dict(batch_size=8), train=dict(steps=3, eval_batches=1)
        )
    )
    tr = run(cfg).train
    assert cfg.train.task == "teacher"  # the default for an mlp
    assert (tr["task_floor"] == 0.0).all() and (tr["task_baseline"] == 1.0).all()


@pytest.mark.parametrize(
    "config, setting, needles",
    [
        ("pre-norm", "train.task=teacher", ["train.task: 'teacher'", "use train.task: sequence"]),
        ("deep50", "train.task=sequence", ["train.task: 'sequence'", "use train.task: teacher"]),
        ("deep50", "train.vocab=8", ["train.vocab: only for train.task: sequence"]),
        ("pre-norm", "train.vocab=1", ["train.vocab", "greater than or equal to 2"]),
        ("pre-norm", "train.chain_temperature=0", ["train.chain_temperature"]),
        ("pre-norm", "data.input=tokens", ["data.input: 'tokens' is not used by train.task: sequence"]),
    ],
)
def test_task_settings_are_one_line_errors(tmp_path, config, setting, needles):
    result = runner.invoke(app, ["run", config, "--out", str(tmp_path / "r"), "--set", "train.steps=5", "--set", setting])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
    assert not (tmp_path / "r").exists()


def test_cli_sequence_run_reports_the_floor(tmp_path):
    out = tmp_path / "r"
    args = [
        "run",
        "pre-norm",
        "--out",
        str(out),
        "--no-plots",
        "--set",
        "model.depth=1",
        "--set",
        "model.width=16",
        "--set",
        "data.seq_len=8",
        "--set",
        "data.batch_size=8",
        "--set",
        "train.steps=4",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    tr = pd.read_csv(out / "train.csv")
    floor = tr["task_floor"].iloc[0]
    assert "floor" in result.output and f"floor {floor:.3g}" in result.output


def test_compare_of_training_configs_writes_train_csv_table_and_loss_plot(tmp_path):
    """Two tiny training configs (pre-LN, post-LN) through `resflow compare`: train.csv holds both
    variants, each equal to a direct run of its config; the loss table and the loss figure cover both."""
    for name, norm in (("pre", "pre"), ("post", "post")):
        (tmp_path / f"{name}.yaml").write_text(
            "dtype: float64\nmodel: {block: transformer, depth: 1, width: 8, heads: 2, ffn_mult: 2, residual: true, "
            f"norm: {norm}}}\ndata: {{batch_size: 4, seq_len: 6}}\n"
            "train: {steps: 6, lr: 0.01, record_every: 3, eval_batches: 1, vocab: 5}\n"
        )
    refs = [str(tmp_path / "pre.yaml"), str(tmp_path / "post.yaml")]
    out = tmp_path / "c"
    result = runner.invoke(app, ["compare", *refs, "--set", "seeds=2", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    tr = pd.read_csv(out / "train.csv")
    assert list(dict.fromkeys(tr["variant"])) == ["pre", "post"] and len(tr) == 2 * 2 * 7
    for name, ref in zip(("pre", "post"), refs):
        direct = run(load_config(ref, ["seeds=2"])).train.drop(columns="wall_time_s")
        mine = tr[tr["variant"] == name].drop(columns="wall_time_s").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, direct, check_exact=True, check_dtype=False)
    # the loss table: one row per variant, its end loss the median over seeds at the last step
    for name in ("pre", "post"):
        last = tr[(tr["variant"] == name) & (tr["step"] == 6)]
        table = result.output[result.output.index("loss (median over seeds)") :]
        row = next(line for line in table.splitlines() if line.strip("│ ").startswith(f"{name} "))
        assert f"{np.median(last['eval_loss']):.3g}" in row and f"{np.median(last['task_floor']):.3g}" in row, row
    assert "above floor" in result.output and "train.csv" in result.output
    assert {"loss.png", "steps.png", "profile.png"} <= {p.name for p in out.iterdir()}
    # the gradient table is at the last step, and says so
    assert "after training: step 6" in result.output
    shown = runner.invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "above floor" in shown.output


def test_loss_figure_has_one_line_per_variant_and_the_floor():
    from resflow.report.figures.plots import loss_figure

    rows = [
        dict(
            variant=v,
            seed=s,
            step=t,
            loss=2.8 - t / 100 * (1 if v == "a" else 0.5),
            eval_loss=np.nan,
            task_floor=1.6 + 0.01 * s,
            task_baseline=2.6,
        )
        for v in ("a", "b")
        for s in range(2)
        for t in range(0, 101, 10)
    ]
    ax = loss_figure(pd.DataFrame(rows)).axes[0]
    gids = [ln.get_gid() for ln in ax.get_lines()]
    assert [g for g in gids if g.startswith("loss:")] == ["loss:a", "loss:b"]
    floor = [ln for ln in ax.get_lines() if ln.get_gid().startswith("floor:")]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == pytest.approx(1.605)  # median over seeds
    assert ax.get_yscale() == "linear"  # 1.6 … 2.8: less than a decade


def test_sweep_of_a_training_config_writes_train_csv(tmp_path):
    from resflow.sweep.plan import make_plan
    from resflow.sweep.runner import run_sweep

    plan = make_plan(tiny("train.steps=3", "train.eval_batches=1"), (), ["model.norm=pre,post", "model.depth=1"])
    result = run_sweep(plan, tmp_path / "s", workers=1).result
    tr = pd.read_csv(tmp_path / "s" / "train.csv")
    assert list(dict.fromkeys(tr["variant"])) == [p.variant for p in plan.points] and len(tr) == 2 * 4
    assert tr["norm"].tolist() == ["pre"] * 4 + ["post"] * 4
    assert result.train is not None and (result.summary["step"] == 3).sum() == 2


def test_loss_table_fits_the_terminal_without_cutting_names():
    from rich.console import Console

    from resflow.report.terminal.train import loss_table
    from resflow.results.tables import RunResult

    rows = [
        dict(variant=v, seed=s, step=t, loss=2.0 - t, eval_loss=1.9 - t, task_floor=0.5, task_baseline=1.5)
        for v in ("a-rather-long-variant-name", "b")
        for s in (0, 1)
        for t in (0, 1)
    ]
    result = RunResult(grads=pd.DataFrame(), params=pd.DataFrame(), summary=pd.DataFrame(), train=pd.DataFrame(rows))

    def text(width):
        console = Console(width=width, record=True)
        console.print(loss_table(result, width=width))
        return console.export_text()

    wide, narrow = text(200), text(110)  # natural widths here: 131 with everything, 107 without loss start/end
    header = lambda out: next(line for line in out.splitlines() if "variant" in line)  # noqa: E731
    assert "loss start" in header(wide) and "on a wider terminal" not in wide
    assert "loss start" not in header(narrow) and "on a wider terminal also: loss start/end" in " ".join(narrow.split())
    assert "a-rather-long-variant-name" in narrow and "min–max" in header(narrow) and "above floor" in header(narrow)
