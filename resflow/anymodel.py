"""Any nn.Module's gradient flow: `record` (one step, at the weights it is given) and `watch` (the
user's own training loop). Both return / hold the same tables as `resflow.run`, plus a `module`
column naming each block; `write_run` and `show`/`plot`/`compare` take them as they are.

The blocks are found by resflow.measure.blocks; the measuring is resflow.measure.recorder's
Recorder (by_call: each call of a block is a site, `layer` its index in forward order). A block called twice in one forward
(shared weights) is two sites: each row is that call's input and the gradient reaching it, and
its parameters' gradient (in both rows) is their total gradient, from both calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import torch

from resflow.errors import ConfigError, ResflowError
from resflow.measure.blocks import block_sites, family, find_blocks, outside_params
from resflow.measure.data import data_generator, make_loss
from resflow.measure.device import DTYPES, resolve_device
from resflow.measure.recorder import Recorder
from resflow.results.files import check_out_dir, write_files
from resflow.results.meta import run_meta
from resflow.results.stats import summarize
from resflow.results.tables import (
    CONFIG_COLUMNS,
    GRADS_COLUMNS,
    SUMMARY_COLUMNS,
    RunResult,
    grads_frame,
    params_frame,
    summary_frame,
    train_frame,
)
from resflow.results.tensorboard_events import write_step
from resflow.results.tensorboard_events import writer as tensorboard_writer
from resflow.theory.overlay import add_prediction
from resflow.theory.predict import NoPrediction

NO_THEORY = "no prediction: a model resflow did not build (any nn.Module)"


# ---------------------------------------------------------------------------------------------
# Inputs, outputs, loss


def call_args(inputs) -> tuple[tuple, dict]:
    """(args, kwargs) for `model(*args, **kwargs)`: a tensor, a tuple/list of args, a dict of kwargs."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    raise ConfigError(
        f"inputs: expected a tensor, a tuple of positional args or a dict of keyword args, got {type(inputs).__name__}"
    )


def _needing_grad(value):
    """A floating tensor as a new leaf that requires grad (the caller's tensor is left alone), so the
    gradient reaching a block fed by the input directly exists; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and not value.requires_grad:
        return value.detach().requires_grad_(True)
    return value


def output_tensor(out) -> torch.Tensor:
    """The tensor a default loss applies to: the output itself, a Hugging Face ModelOutput's
    `.logits`, else the first tensor in a tuple / dict output."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for item in items:
        if isinstance(item, torch.Tensor) and item.is_floating_point():
            return item
    raise ConfigError(
        f"the model's output ({type(out).__name__}) holds no floating tensor for the default loss; "
        "pass loss=a function of the output returning a scalar"
    )


def default_loss(out) -> torch.Tensor:
    """resflow's `random` loss <v, output> with a fixed Gaussian v (data seed 0)."""
    t = output_tensor(out)
    return make_loss("random", tuple(t.shape), data_generator(0), t.device, t.dtype)(t)


def _scalar(value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"loss: must return a scalar tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise ConfigError(f"loss: must return a scalar, got a tensor of shape {tuple(value.shape)}")
    if not value.requires_grad:
        raise ConfigError("loss: the value does not depend on any parameter or input that requires grad")
    return value.reshape(())


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------------------------
# Tables


def _config_values(named) -> dict:
    cols = dict.fromkeys(CONFIG_COLUMNS)  # not resflow's own model: its config columns are empty
    cols.update(block=family(named), depth=len(named))
    return cols


def _frames(grads: dict, params: dict, train: dict | None, named):
    """(grads, params, summary, train) DataFrames from the rows kept as {column: values}."""
    import pandas as pd

    n = len(grads.get("seed", ()))
    grads = {**grads, **{k: [v] * n for k, v in _config_values(named).items()}}
    if n:
        grads_df = grads_frame(grads)
        summary_df = summary_frame(summarize(grads_df, CONFIG_COLUMNS))
    else:
        grads_df = grads_frame({c: [] for c in (*GRADS_COLUMNS, "module")})
        summary_df = pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    grads_df, summary_df = add_prediction(grads_df, summary_df, NoPrediction(NO_THEORY))
    params_df = params_frame(
        params if params else {c: [] for c in ("variant", "seed", "step", "layer", "param", "grad_norm", "value_norm")}
    )
    train_df = None
    if train is not None:
        m = len(train["step"])
        unknown = dict.fromkeys(("eval_loss", "grad_norm_total", "lr", "task_floor", "task_baseline"), math.nan)
        train_df = train_frame({**train, **{k: [v] * m for k, v in {**unknown, **_config_values(named)}.items()}})
    return grads_df, params_df, summary_df, train_df


def _device_dtype(model) -> tuple[str, str]:
    p = next(iter(model.parameters()), None)
    return (str(p.device), str(p.dtype).removeprefix("torch.")) if p is not None else ("cpu", "float32")


def _config(model, named, name: str, loss: str, extra: dict) -> dict:
    device, dtype = _device_dtype(model)
    return dict(
        name=name,
        model={"class": type(model).__name__, "blocks": family(named), "modules": [n for n, _ in named]},
        loss=loss,
        dtype=dtype,
        device=device,
        seeds=1,
        **extra,
    )


def _meta(model, started: datetime, t0: float, **extra) -> dict:
    device, dtype = _device_dtype(model)
    return run_meta(started, t0, device=device, dtype=dtype, seeds=[0], theory=NO_THEORY, **extra)


# ---------------------------------------------------------------------------------------------
# record


def record(model, inputs, loss=None, *, blocks=None, name=None) -> RunResult:
    """One forward and backward of `model` on `inputs`, recorded at every block: a RunResult like
    `resflow.run`'s (grads/params/summary; a `module` column names each block).

    `inputs`: a tensor, a tuple of positional args or a dict of keyword args; floating tensors are
    given to the model as new leaves that require grad (so the first block's input gradient exists;
    your tensors are not changed). `loss(output) -> scalar`; default: <v, output tensor> with a fixed
    Gaussian v (a ModelOutput's `.logits`). `blocks`: None (discovered), glob patterns, or modules
    (resflow.measure.blocks). The model is left as found: its parameters' `.grad`s and its buffers (a
    BatchNorm's running statistics, which a forward in train mode updates) are put back, every hook
    is removed, also on error. The forward runs in the mode the model is in (train/eval).
    """
    named = find_blocks(model, blocks)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    rec, value = measure(model, named, inputs, loss)
    variant = name or type(model).__name__
    grads, prows = {}, {}
    rec.add_rows(grads, prows, variant, seed=0, step=0)
    grads_df, params_df, summary_df, _ = _frames(grads, prows, None, named)
    loss_name = "random" if loss is None else getattr(loss, "__name__", "custom")
    return RunResult(
        grads=grads_df,
        params=params_df,
        summary=summary_df,
        config=_config(model, named, variant, loss_name, {}),
        meta=_meta(model, started, t0, loss_value=value),
    )


def measure(model, named, inputs, loss=None):
    """(Record, loss value) of one recorded step of `model` on `inputs` at the blocks `named`,
    leaving the model as found (record's doc)."""
    sites, extra = block_sites(named), outside_params(model, named)
    args, kwargs = call_args(inputs)
    args = tuple(_needing_grad(a) for a in args)
    kwargs = {k: _needing_grad(v) for k, v in kwargs.items()}
    params = list(model.parameters())
    grads_before = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):  # the same dropout draw if the step is taken again
            state = torch.random.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]
            for exact in (False, True):
                for p in params:
                    p.grad = None
                with torch.no_grad():
                    for b, saved in buffers:
                        b.copy_(saved)
                torch.random.set_rng_state(state[0])
                for d, s in zip(cuda, state[1]):
                    torch.cuda.set_rng_state(s, d)
                rec, value = _step(model, sites, extra, args, kwargs, loss, exact)
                if rec.norms_exact:  # else (off the CPU) a norm may have under/overflowed: again in float64
                    break
    finally:
        with torch.no_grad():
            for p, g in zip(params, grads_before):
                p.grad = g
            for b, saved in buffers:
                b.copy_(saved)
    return rec, value


def run_factory(cfg, on_seed=None) -> RunResult:
    """`resflow.run` for a config whose model.factory builds the model: each seed's model (torch's
    RNG seeded as for resflow's own models) and data (data.shape or data.tokens), measured by
    `measure` with the config's loss on the output tensor (a ModelOutput's .logits)."""
    from resflow.models.factory import build
    from resflow.models.init import seed_rng

    device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    d = cfg.data
    grads, prows, named = {}, {}, []
    for seed in cfg.seed_list:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            seed_rng(seed, device)
            model = build(cfg.model.factory, cfg.model.kwargs).to(device=device, dtype=dtype)
        gen = data_generator(seed)
        if d.shape is not None:
            inputs = (torch.randn(tuple(d.shape), generator=gen, dtype=torch.float64) * d.input_scale).to(
                device=device, dtype=dtype
            )
        else:
            inputs = torch.randint(d.tokens.vocab, (d.batch_size, d.tokens.seq_len), generator=gen).to(device)

        def loss_fn(out, gen=gen):
            t = output_tensor(out)
            return make_loss(cfg.loss, tuple(t.shape), gen, t.device, t.dtype)(t)

        named = find_blocks(model, cfg.model.blocks)
        rec, _ = measure(model, named, inputs, loss_fn)
        rec.add_rows(grads, prows, cfg.name, seed, step=0)
        if on_seed is not None:
            on_seed(seed)
        del model
    grads_df, params_df, summary_df, _ = _frames(grads, prows, None, named)
    meta = run_meta(
        started, t0, device=str(device), dtype=cfg.dtype, seeds=cfg.seed_list, theory=NO_THEORY, blocks=[n for n, _ in named]
    )
    return RunResult(grads=grads_df, params=params_df, summary=summary_df, config=cfg.to_dict(), meta=meta)


def _step(model, sites, extra, args, kwargs, loss, exact: bool):
    """Forward, loss, backward under a Recorder: (Record, loss value)."""
    with Recorder(sites, exact=exact, extra_params=extra, by_call=True) as rec:
        try:
            out = model(*args, **kwargs)
        except ResflowError:
            raise
        except Exception as err:
            raise ConfigError(f"the model rejected the inputs: {_one_line(err)}") from err
        try:
            value = _scalar(default_loss(out) if loss is None else loss(out))
        except ResflowError:
            raise
        except Exception as err:
            raise ConfigError(f"loss: failed on the model's output: {_one_line(err)}") from err
        try:
            value.backward()
        except Exception as err:
            raise ResflowError(f"backward failed: {_one_line(err)}") from err
        result = rec.collect()
    if not result.layer:
        raise ResflowError(f"none of the {len(sites)} blocks ({sites[0].name}, ...) was called by the model's forward")
    return result, value.item()


# ---------------------------------------------------------------------------------------------
# watch


class Watch:
    """`with resflow.watch(model, every=k, out=dir) as w:` ... `w.step(loss)` once per training step.

    Steps are numbered from 0 by the calls of `step()`. Step s is recorded iff s % every == 0: the
    hooks are armed from the entry into the `with` (for step 0) and by the `step()` call that ends a
    step before a recorded one, so the *next* forward is the one measured; that same step's
    `step()` reads the gradients (after your `loss.backward()`, before `opt.step()`/`zero_grad()`)
    and disarms them. Between, no hook is attached: a step that does not record runs your model as
    it is. What a recorded step measures: the first forward after arming with gradients enabled
    (forwards under `torch.no_grad()` are skipped; several forwards in one step, e.g. gradient
    accumulation, are all recorded, their blocks numbered on), each block's input and dloss/dx
    from your backward, and each parameter's `.grad` as it is at `step()`. A block whose input
    needs no gradient (the first block fed by your data directly) reads NaN: no gradient exists
    there. `loss` (optional) goes to train.csv for every step it is given.

    With `out`, a results dir is written after each recorded step (each file atomically: a valid
    results dir after every flush) and at exit, also on error: a crash or Ctrl-C loses at most the
    steps since the last recorded one. Each flush writes the whole tables again. In memory:
    `w.grads`, `w.params`, `w.summary`, `w.train` (DataFrames), `w.result()` (a RunResult).

    With `tensorboard=LOGDIR`, each recorded step's per-layer scalars (`input_grad_norm/layer_003`,
    `param_grad_norm/...`, `activation_rms/...`: the tags of `resflow export --to tensorboard`) and
    its loss (if given to that step's `step()`) are appended to an event file in LOGDIR and flushed,
    so `tensorboard --logdir LOGDIR` shows the curves while you train. Steps not recorded write nothing.
    """

    def __init__(self, model, *, blocks=None, every: int = 1, out=None, name=None, force: bool = False, tensorboard=None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every: must be a whole number >= 1, got {every!r}")
        self.model, self.every, self.name = model, every, name or type(model).__name__
        self.out = Path(out) if out is not None else None
        self._force = force
        self._named = find_blocks(model, blocks)
        self._recorder = Recorder(block_sites(self._named), extra_params=outside_params(model, self._named), by_call=True)
        self.steps = 0  # the number of step() calls so far: the next step's index
        self.recorded: list[int] = []  # the steps recorded so far
        self._grads: dict = {}
        self._params: dict = {}
        self._losses: list = []  # (step, loss tensor detached or float), read at a flush
        self._train = {"variant": [], "seed": [], "step": [], "loss": [], "wall_time_s": []}
        self._inexact: list[int] = []
        self._armed = False
        self._entered = False
        self.tensorboard = Path(tensorboard) if tensorboard is not None else None
        self._tb = None  # the event file writer, open inside the `with`
        if self.tensorboard is not None:
            try:
                import tensorboard as _  # noqa: F401  (optional: the `tensorboard` extra)
            except ImportError:
                raise ResflowError('watch: tensorboard= needs TensorBoard: pip install "resflow[tensorboard]"') from None

    # -- the loop ---------------------------------------------------------------------------
    def __enter__(self) -> "Watch":
        if self.out is not None:
            check_out_dir(self.out, self._force)
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ResflowError(f"cannot create the results dir {str(self.out)!r}: {err.strerror or err}") from None
        if self.tensorboard is not None:
            self._tb = tensorboard_writer(self.tensorboard)
        self._started, self._t0 = datetime.now(timezone.utc), time.perf_counter()
        self._entered = True
        if self.steps % self.every == 0:
            self._arm()
        return self

    def __exit__(self, *exc) -> None:
        self._disarm()  # a step left half done (no step() call) is not recorded
        self._entered = False
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.out is not None:
            self.flush()

    def step(self, loss=None) -> None:
        """End step `self.steps`: record it if it is a recorded step, note its loss, arm for the next."""
        if not self._entered:
            raise ResflowError("watch: step() outside the `with resflow.watch(...)` block")
        s = self.steps
        recorded, first = False, 0
        again = (s + 1) % self.every == 0  # the next step records too: the module hooks stay
        if self._armed:
            try:
                rec = self._recorder.collect()
            except BaseException:
                self._disarm()
                raise
            if again:
                self._recorder.rearm()
            else:
                self._disarm()
            if rec.layer:
                first = len(self._grads.get("step", ()))
                rec.add_rows(self._grads, self._params, self.name, seed=0, step=s)
                self.recorded.append(s)
                recorded = True
                if not rec.norms_exact:
                    self._inexact.append(s)
        if loss is not None:
            self._losses.append(
                (s, loss.detach() if isinstance(loss, torch.Tensor) else float(loss), time.perf_counter() - self._t0)
            )
        if recorded and self._tb is not None:
            self._write_tensorboard(s, first, loss)
        self.steps = s + 1
        if again and not self._armed:
            self._arm()
        if recorded and self.out is not None:
            self.flush()

    def _write_tensorboard(self, s: int, first: int, loss) -> None:
        """Step s's grads rows (from index `first` on) and its loss, as one TensorBoard event."""
        columns = ("layer", "sublayer", "input_grad_norm", "param_grad_norm", "activation_rms")
        n = len(self._grads["step"])
        rows = [{c: self._grads[c][i] for c in columns if c in self._grads} for i in range(first, n)]
        value = None if loss is None else float(loss.detach().double() if isinstance(loss, torch.Tensor) else loss)
        write_step(self._tb, s, rows, value)

    def _arm(self) -> None:
        self._recorder.reset()
        self._recorder.__enter__()
        self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            self._recorder.__exit__(None, None, None)
            self._armed = False

    # -- tables -----------------------------------------------------------------------------
    def _drain_losses(self) -> None:
        if not self._losses:
            return
        values = [v for _, v, _ in self._losses]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        floats = iter(torch.stack([t.double().reshape(()) for t in tensors]).tolist() if tensors else [])
        train = self._train
        for s, v, wall in self._losses:
            train["variant"].append(self.name)
            train["seed"].append(0)
            train["step"].append(s)
            train["loss"].append(next(floats) if isinstance(v, torch.Tensor) else v)
            train["wall_time_s"].append(wall)
        self._losses.clear()

    def result(self) -> RunResult:
        """Everything recorded so far, as `resflow.run` returns it (train: the losses given)."""
        self._drain_losses()
        grads, params, summary, train = _frames(
            self._grads, self._params, self._train if self._train["step"] else None, self._named
        )
        config = _config(
            self.model,
            self._named,
            self.name,
            "yours",
            {"watch": {"every": self.every, "steps": self.steps, "recorded": len(self.recorded)}},
        )
        meta = _meta(
            self.model,
            self._started,
            self._t0,
            steps=self.steps,
            recorded_steps=list(self.recorded),
            inexact_norm_steps=list(self._inexact),
        )
        return RunResult(grads=grads, params=params, summary=summary, config=config, meta=meta, path=self.out, train=train)

    def __repr__(self) -> str:  # a notebook cell or the REPL: the watch's state, then what it holds
        if not hasattr(self, "_started"):
            return f"<resflow watch: {self.name}, every {self.every} steps, not started>"
        return self.result().overview_text(*self._state())

    def _repr_html_(self) -> str:
        if not hasattr(self, "_started"):
            return f"<div><strong>{escape(repr(self)[1:-1])}</strong></div>"
        return self.result().overview_html(*self._state())

    def _state(self) -> tuple[str, list[tuple[str, str]]]:
        where = f", writing {self.out}" if self.out is not None else ""
        head = f"resflow watch: {self.name}, every {self.every} steps{where}" + (" (running)" if self._entered else "")
        return head, [("step() calls", f"{self.steps} so far, {len(self.recorded)} recorded")]

    def flush(self) -> None:
        """Write the results dir `out` now (each file atomically)."""
        if self.out is None:
            raise ResflowError("watch: flush() needs out=<a results dir>")
        write_files(self.result(), self.out)

    @property
    def grads(self):
        return self.result().grads

    @property
    def params(self):
        return self.result().params

    @property
    def summary(self):
        return self.result().summary

    @property
    def train(self):
        return self.result().train


def watch(model, *, blocks=None, every: int = 1, out=None, name=None, force: bool = False, tensorboard=None) -> Watch:
    """A context manager recording `model`'s gradient flow inside your own training loop (see Watch);
    `tensorboard=LOGDIR` also logs each recorded step's scalars there, live."""
    return Watch(model, blocks=blocks, every=every, out=out, name=name, force=force, tensorboard=tensorboard)
