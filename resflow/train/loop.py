"""Training mode: does the network learn? `train(config) -> RunResult` with a `train` table.

For each seed: build and initialise the model exactly as `experiment.measure_seed` does, draw the task
(teacher, inputs) from the seed's data generator, and take `train.steps` optimizer steps on fresh
batches. Step s means "after s updates". At every recorded step (0, k, 2k, ... and the last) the
forward/backward runs under the recorder, giving grads.csv / params.csv rows with that `step`, and
the optimizer-step quantities of the registry (resflow.quantities: the step's update relative to the
weights, per parameter and per block; the movement since initialisation) measured from the
primitives that StepNorms (resflow.measure.steps) takes around each recorded step's update.
train.csv gets one row per step: the batch's loss, eval_loss at recorded steps, the total gradient
norm, the learning rate used and the wall time; a dataset's classification (train.task: classify)
adds, at recorded steps, eval_accuracy (eval_loss and eval_accuracy: the test set) and
train_set_loss / train_set_accuracy (the whole training set), all in eval mode (BatchNorm's running
statistics; at step 0, when those have seen one batch, BatchNorm's batch statistics). Bit for bit
deterministic for a given seed.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from resflow.config.schema import record_steps
from resflow.measure.data import data_generator, model_io
from resflow.measure.recorder import Record, Recorder, group_norm, remeasure_inexact
from resflow.measure.steps import StepNorms, add_step
from resflow.models import build_model
from resflow.models.init import seed_rng
from resflow.results.assemble import Rows, assemble
from resflow.results.meta import run_meta
from resflow.results.stats import end_sites
from resflow.results.tables import RunResult, config_columns
from resflow.train.tasks import make_task

CLASSIFY_COLUMNS = ("eval_accuracy", "train_set_loss", "train_set_accuracy")  # train.csv, train.task: classify

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


@dataclass
class StepInfo:
    """What the live view sees after each step (plain floats)."""

    seed: int
    step: int
    steps: int
    loss: float
    lr: float
    grad_norm_total: float | None = None  # the norm of all parameters' gradients (train.csv's column)
    eval_loss: float | None = None  # at recorded steps
    eval_accuracy: float | None = None  # classify: at recorded steps, the test set's
    train_accuracy: float | None = None  # classify: at recorded steps, the training set's
    grad_first: float | None = None  # ||dloss/dx|| at the first / last block's input (end_sites), at recorded steps
    grad_last: float | None = None
    layers: list | None = None  # at recorded steps: one dict per site (layer, sublayer and its three norms)


def site_rows(rec: Record) -> list[dict]:
    """A Record's per-site values as one dict each (what a live tracker logs per step)."""
    rows: dict[str, list] = {}
    rec.add_rows(rows, {}, "", 0, 0)
    keep = ["layer", "sublayer", *(c for c in rows if c not in ("variant", "seed", "step", "layer", "sublayer", "module"))]
    return [{c: rows[c][i] for c in keep} for i in range(len(rec.layer))]


def batch_size(cfg) -> int:
    return cfg.train.batch_size or cfg.data.batch_size


def warmup_factor(step: int, warmup: int) -> float:
    """Linear warmup: the learning rate of step s (0-based) is lr * min(1, (s + 1) / warmup)."""
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def make_optimizer(cfg, params):
    t = cfg.train
    return OPTIMIZERS[t.optimizer](params, lr=t.lr, weight_decay=t.weight_decay)


@dataclass
class SeedRun:
    """One seed's training, as plain lists: recorded steps and their Records, and per-step rows."""

    records: list[tuple[int, Record]] = field(default_factory=list)  # (step, record with the step's primitives)
    rows: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ("step", "loss", "eval_loss", "grad_norm_total", "lr", "wall_time_s")}
    )
    floor: float = math.nan  # the task's lowest achievable loss, for this seed
    baseline: float = math.nan  # the loss of the task's best constant prediction


def train_seed(cfg, seed: int, device: torch.device, on_step=None) -> SeedRun:
    from resflow.measure.device import DTYPES  # the same dtype table as measuring at initialisation

    dtype = DTYPES[cfg.dtype]
    t = cfg.train
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seed_rng(seed, device)
        stack = build_model(cfg.model, device=device, dtype=dtype, io=model_io(cfg))
    gen = data_generator(seed)
    task = make_task(cfg, gen, device, dtype)
    model = task.wrap(stack)
    bs = batch_size(cfg)
    evaluate = getattr(task, "evaluate", None)  # a task with its own test set (classify)
    eval_set = [task.batch(gen, bs) for _ in range(t.eval_batches)] if evaluate is None else []

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable)
    recorder = Recorder(stack)
    steps = StepNorms(recorder.params, track_moved=True)  # the recorder's unique parameters; copies of them
    row_param = recorder.param_rows  # each params.csv row's index into them
    recorded = set(record_steps(t.steps, t.record_every))
    out = SeedRun(floor=float(task.floor), baseline=float(task.baseline))
    if evaluate is not None:
        out.rows.update({k: [] for k in CLASSIFY_COLUMNS})
    t0 = time.perf_counter()

    for step in range(t.steps + 1):
        x, y = task.batch(gen, bs)
        lr = t.lr * warmup_factor(step, t.warmup)
        record = step in recorded
        if record and x.is_floating_point():
            x.requires_grad_(True)  # so the first site's input gradient is measured too
        optimizer.zero_grad(set_to_none=True)
        with recorder if record else nullcontext():
            if record:
                recorder.reset()
            loss = task.loss(model(x), y)
            loss.backward()
            rec = recorder.collect() if record else None
        if rec is not None and not rec.norms_exact:  # a norm may have under/overflowed: the step again, float64 norms
            optimizer.zero_grad(set_to_none=True)
            x.grad = None
            with Recorder(stack, exact=True) as exact:
                loss = task.loss(model(x), y)
                loss.backward()
                rec = exact.collect()
        grads = [p.grad for p in trainable if p.grad is not None]
        # the loss and the gradient norms in one transfer; norms that may have under/overflowed in float32 again in float64
        values = torch.stack([loss.detach().double(), *(n.double() for n in torch._foreach_norm(grads))]).tolist()
        loss_val, total_val = values[0], group_norm(remeasure_inexact(values[1:], grads))

        eval_loss = _evaluate(model, task, eval_set) if record and eval_set else math.nan
        if evaluate is not None:  # the test set and the whole training set, at recorded steps
            metrics = (
                evaluate(model, batch_stats=step == 0) if record else dict.fromkeys(("test_loss", *CLASSIFY_COLUMNS), math.nan)
            )
            eval_loss = metrics["test_loss"]
            for key in CLASSIFY_COLUMNS:
                out.rows[key].append(metrics[key])
        if record:  # ||W_s - W_0||, before this step's update
            moved = steps.moved()
        update = before = None  # (the last step: no update follows)
        if step < t.steps:
            if record:
                steps.before()
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            if record:
                update, before = steps.after()
        if record:
            add_step(rec, row_param, update, before)
            rec.set_param("moved", [moved[i] for i in row_param])
            out.records.append((step, rec))

        rows = out.rows
        rows["step"].append(step)
        rows["loss"].append(loss_val)
        rows["eval_loss"].append(eval_loss)
        rows["grad_norm_total"].append(total_val)
        rows["lr"].append(lr if step < t.steps else math.nan)
        rows["wall_time_s"].append(round(time.perf_counter() - t0, 6))
        if on_step is not None:
            on_step(
                StepInfo(
                    seed=seed,
                    step=step,
                    steps=t.steps,
                    loss=loss_val,
                    lr=lr,
                    grad_norm_total=total_val,
                    eval_loss=eval_loss if record else None,
                    eval_accuracy=out.rows["eval_accuracy"][-1] if record and evaluate is not None else None,
                    train_accuracy=out.rows["train_set_accuracy"][-1] if record and evaluate is not None else None,
                    grad_first=rec.input_grad_norm[end_sites(rec.layer)[0]] if rec else None,
                    grad_last=rec.input_grad_norm[end_sites(rec.layer)[1]] if rec else None,
                    layers=site_rows(rec) if rec else None,
                )
            )
    return out


@torch.no_grad()
def _evaluate(model, task, eval_set) -> float:
    losses = torch.stack([task.loss(model(x.detach()), y) for x, y in eval_set])
    return float(losses.double().mean())


def train(cfg, on_seed=None, on_step=None) -> RunResult:
    """Train every seed of `cfg` for `cfg.train.steps` steps; returns the tables (nothing is written).

    Runs on one CPU thread (restored afterwards): these models are small, so a step is dominated by
    per-op overhead, which more threads only add to (docs/performance.md).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, on_seed, on_step)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, on_seed, on_step) -> RunResult:
    from resflow.measure.device import resolve_device

    device = resolve_device(cfg.device)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    rows = Rows(train={"variant": [], "seed": []})
    floors, baselines = [], []
    for seed in cfg.seed_list:
        run = train_seed(cfg, seed, device, on_step)
        for step, rec in run.records:
            rows.add(rec, cfg.name, seed, step)
        n_steps = len(run.rows["step"])
        rows.train["variant"] += [cfg.name] * n_steps
        rows.train["seed"] += [seed] * n_steps
        for key, values in run.rows.items():
            rows.train.setdefault(key, []).extend(values)
        rows.train.setdefault("task_floor", []).extend([run.floor] * n_steps)
        rows.train.setdefault("task_baseline", []).extend([run.baseline] * n_steps)
        floors.append(run.floor)
        baselines.append(run.baseline)
        if on_seed is not None:
            on_seed(seed)
    meta = run_meta(
        started,
        t0,
        device=str(device),
        dtype=cfg.dtype,
        seeds=cfg.seed_list,
        train_steps=cfg.train.steps,
        task=cfg.train.task,
        task_floor=floors,  # per seed: the lowest achievable loss
        task_baseline=baselines,  # per seed: the loss of the best constant prediction
        record_steps=record_steps(cfg.train.steps, cfg.train.record_every),
    )
    # no theory overlay: the theory is about the network at initialisation, not a training run
    return assemble(rows, config_columns(cfg), config=cfg.to_dict(), meta=meta)
