"""Any nn.Module's gradient flow: `record` (one step, at the weights it is given) and `watch` (the
user's own training loop). Both return / hold the same tables as `resflow.run`, plus a `module`
column naming each block; `write_run` and `show`/`plot`/`compare` take them as they are.

The blocks are found by resflow.measure.blocks; the measuring is resflow.measure.recorder's
Recorder (by_call: `layer` is a block's index in forward order; a step's forwards, i.e. gradient
accumulation's micro-batches, combined; checkpointing's recompute not counted). A block called
twice in one forward (shared weights) is two sites: each row is that call's input and the gradient
reaching it, and its parameters' gradient (in both rows) is their total gradient, from both calls.
A data-parallel model (DDP, FSDP2) is measured over the global batch: resflow.measure.distributed.
A compiled model runs its recorded steps eagerly (`_eager`), so the hooks see every block.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from resflow import quantities as registry
from resflow._sys.locks import results_lock
from resflow.errors import ConfigError, ResflowError
from resflow.measure.blocks import block_sites, family, find_blocks, outside_params
from resflow.measure.data import data_generator, make_loss
from resflow.measure.device import DTYPES, resolve_device
from resflow.measure.distributed import data_parallel, initialized, is_writer, unwrap, world_size
from resflow.measure.recorder import Recorder
from resflow.measure.steps import StepNorms, add_step
from resflow.results.assemble import Rows, assemble
from resflow.results.files import TABLES, AppendedRun, check_out_dir, check_out_path
from resflow.results.meta import run_meta
from resflow.results.sinks import Sinks, check_log_to, summary_of  # live trackers (log_to=)
from resflow.results.tables import CONFIG_COLUMNS, RunResult
from resflow.results.tensorboard_events import MEASURES
from resflow.theory.overlay import overlay
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
    """A floating tensor as a new leaf that requires grad, detached from the caller's graph (so the
    backward stops there: nothing reaches the caller's parameters or a leaf's `.grad`), so the
    gradient reaching a block fed by the input directly exists; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
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


def check_grad_mode() -> None:
    """A one-line error naming the cause when gradients cannot be taken here (inside torch.no_grad()
    or torch.inference_mode()), before anything runs."""
    if torch.is_inference_mode_enabled():
        raise ConfigError("record: called inside torch.inference_mode(), where no gradient exists; call it outside that block")
    if not torch.is_grad_enabled():
        raise ConfigError(
            "record: called with gradients disabled (inside torch.no_grad() or set_grad_enabled(False)); call it outside that block"
        )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------------------------
# Tables


def _config_values(named) -> dict:
    cols = dict.fromkeys(CONFIG_COLUMNS)  # not resflow's own model: its config columns are empty
    cols.update(block=family(named), depth=len(named))
    return cols


def _result(rows: Rows, named, config: dict | None = None, meta: dict | None = None) -> RunResult:
    """`rows` as a RunResult by the one assembly path (resflow.results.assemble): the config columns
    resflow knows of any model (its block family and count), no theory (NaN columns), and the
    train.csv columns a watch does not know as NaN."""
    train = rows.train
    if train is not None:
        m = len(train["step"])
        unknown = [k for k in ("eval_loss", "grad_norm_total", "lr", "task_floor", "task_baseline") if k not in train]
        rows = Rows(rows.grads, rows.params, {**train, **{k: [math.nan] * m for k in unknown}})
    nothing = overlay(NoPrediction(NO_THEORY))
    return assemble(rows, _config_values(named), overlay=nothing, config=config, meta=meta, module=True)


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
    if initialized():  # a data-parallel run: the rows are the global batch's, over this many ranks
        extra["ranks"] = world_size()
    return run_meta(started, t0, device=device, dtype=dtype, seeds=[0], theory=NO_THEORY, **extra)


def _eager():
    """torch.compile's stance set to force_eager (undo with `.__exit__(None, None, None)`) if torch.compile
    may be in use (torch._dynamo imported), else None. A recorded step then runs eagerly: every hook
    fires as without compiling (a compiled graph skips hooks added after it was compiled, and
    hooks traced into one break it)."""
    if "torch._dynamo" not in sys.modules:  # (importing it would take seconds; nothing is compiled)
        return None
    return torch.compiler.set_stance("force_eager")


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
    is removed, also on error. The forward runs in the mode the model is in (train/eval); a compiled
    model's runs eagerly. Under DDP/FSDP2 every rank must call it (with its slice of the batch).
    """
    check_materialised(model)
    named = find_blocks(unwrap(model), blocks)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    rec, value = measure(model, named, inputs, loss)
    variant = name or type(model).__name__
    rows = Rows()
    rows.add(rec, variant, seed=0, step=0)
    loss_name = "random" if loss is None else getattr(loss, "__name__", "custom")
    config = _config(model, named, variant, loss_name, {})
    return _result(rows, named, config=config, meta=_meta(model, started, t0, loss_value=value))


def measure(model, named, inputs, loss=None):
    """(Record, loss value) of one recorded step of `model` on `inputs` at the blocks `named`,
    leaving the model as found (record's doc)."""
    check_grad_mode()
    dp = data_parallel(model, "record")
    inner = unwrap(model)
    sites, extra = block_sites(named), outside_params(inner, named)
    args, kwargs = call_args(inputs)
    args = tuple(_needing_grad(a) for a in args)
    kwargs = {k: _needing_grad(v) for k, v in kwargs.items()}
    params = list(model.parameters())
    grads_before = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    stance = _eager()
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
                rec, value = _step(model, sites, extra, args, kwargs, loss, exact, inner, dp)
                if rec.norms_exact:  # else (off the CPU) a norm may have under/overflowed: again in float64
                    break
        if dp is not None:
            dp.reduce(rec)
        rec.micro_batches = None  # (one forward: record's files have no micro_batches column)
    finally:
        if stance is not None:
            stance.__exit__(None, None, None)
        with torch.no_grad():
            for p, g in zip(params, grads_before):
                p.grad = g
            for b, saved in buffers:
                b.copy_(saved)
    return rec, value


def run_factory(cfg, on_seed=None, allow_code: bool | None = None) -> RunResult:
    """`resflow.run` for a config whose model.factory builds the model: each seed's model (torch's
    RNG seeded as for resflow's own models) and data (data.shape or data.tokens), measured by
    `measure` with the config's loss on the output tensor (a ModelOutput's .logits). `allow_code`:
    the opt-in for a module:callable factory (resflow.models.factory.check)."""
    from resflow.models.factory import build
    from resflow.models.init import seed_rng

    device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    d = cfg.data
    rows, named = Rows(), []
    for seed in cfg.seed_list:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            seed_rng(seed, device)
            model = build(cfg.model.factory, cfg.model.kwargs, allow_code).to(device=device, dtype=dtype)
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
        rows.add(rec, cfg.name, seed, step=0)
        if on_seed is not None:
            on_seed(seed)
        del model
    meta = run_meta(
        started, t0, device=str(device), dtype=cfg.dtype, seeds=cfg.seed_list, theory=NO_THEORY, blocks=[n for n, _ in named]
    )
    return _result(rows, named, config=cfg.to_dict(), meta=meta)


def _step(model, sites, extra, args, kwargs, loss, exact: bool, root=None, dp=None):
    """Forward, loss, backward under a Recorder: (Record, loss value)."""
    local = dp.local if dp is not None else None
    with Recorder(sites, exact=exact, extra_params=extra, by_call=True, root=root, local=local) as rec:
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
    it is. What a recorded step measures: every forward of the model between arming and `step()`
    (forwards under `torch.no_grad()` are skipped), each block's input and dloss/dx from your
    backward, and each parameter's `.grad` as it is at `step()`. Several forwards in one step
    (gradient accumulation) are one row per block: the norm over all micro-batches (sqrt of the sum
    of their squares), their count in the `micro_batches` column; activation checkpointing's
    recompute adds nothing. A block whose input needs no gradient (the first block fed by your data
    directly) reads NaN: no gradient exists there. A recorded step at which no block ran warns.
    Every step (recorded or not) is a train.csv row: its loss (if given) and the total gradient
    norm (`_TrainLog`).

    `grad_scaler`: the torch.amp.GradScaler your loop scales the loss with; its scale is divided out
    of the recorded gradient norms (of the parameters' too, unless `scaler.unscale_` ran before
    `step()`). A compiled model runs its recorded steps eagerly. Under DDP / FSDP2 (fully_shard)
    the rows are the global batch's, reduced over the ranks (resflow.measure.distributed); only rank
    0 (`is_writer`) writes `out` and the trackers.

    With `out`, the results dir is written at the first recorded step (by `write_run`: a dir it
    replaces with `force` keeps nothing of the old run) and each later recorded step's rows are
    appended to it (`AppendedRun`: the cost of a flush is that of its own rows), also at exit on
    error: a crash or Ctrl-C loses at most the steps since the last recorded one. The results
    dir's lock is held from entry to exit (another resflow writing `out` is refused). A watch that
    exits before any recorded step writes nothing. In memory (`in_memory=True`): every row, as
    DataFrames assembled once per recorded step (`w.grads`, `w.params`, `w.summary`, `w.train`,
    `w.result()` concatenate them only when a new step came); with `in_memory=False` only the current
    step's rows and a fixed buffer of losses: the tables are read back from `out` when asked for.

    With `log_to` (or `tensorboard=LOGDIR`), each recorded step's per-layer scalars (`input_grad_norm/layer_003`
    and each logged quantity of resflow.quantities alike: the tags of `resflow export --to tensorboard`) and
    every step's `loss` (if given) and `grad_norm_total` go to each tracker (resflow.results.sinks:
    an event file in LOGDIR, flushed; a W&B run; an MLflow run), the per-step scalars when their
    buffer is read (at each recorded step), so `tensorboard --logdir LOGDIR` shows the curves while
    you train; at exit the summary is logged.
    """

    def __init__(
        self,
        model,
        *,
        blocks=None,
        every: int = 1,
        out=None,
        name=None,
        force: bool = False,
        tensorboard=None,
        log_to=None,
        grad_scaler=None,
        in_memory: bool = True,
        quantities: Sequence[str] = (),
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every: must be a whole number >= 1, got {every!r}")
        if not isinstance(in_memory, bool):
            raise ConfigError(f"in_memory: must be True or False, got {in_memory!r}")
        if not in_memory and out is None:
            raise ConfigError("in_memory=False keeps nothing but the files: it needs out=<a results dir>")
        needs = opt_in_needs(quantities)
        check_materialised(model)
        self.model, self.every, self.name = model, every, name or type(model).__name__
        self.out = Path(out) if out is not None and is_writer() else None  # (other ranks write nothing)
        self.in_memory = in_memory
        self._force = force
        self._dp = data_parallel(model)  # DDP / FSDP2: rows reduced over the ranks
        self.is_writer = is_writer()  # rank 0 (or the only process): the one that writes files
        self._writes = self.is_writer  # the one place deciding whether this process writes `out` and trackers
        inner = unwrap(model)
        self._named = find_blocks(inner, blocks)
        self._recorder = Recorder(
            block_sites(self._named),
            extra_params=outside_params(inner, self._named),
            by_call=True,
            root=inner,
            local=self._dp.local if self._dp is not None else None,
            params_in_hooks=grad_scaler is None,  # (unscale_ changes .grad in place unseen)
        )
        self.grad_scaler = grad_scaler
        if needs and self._dp is not None and self._dp.local is not None:  # (a shard's norms and histograms: not the parameter's)
            raise ConfigError(
                f"quantities={list(quantities)!r} are not supported under FSDP2 (its parameters are sharded); use DDP"
            )
        # opt-in quantities across the optimizer step: the parameters copied at step(), their update measured
        # after the optimizer's step (and, for `moved`, a copy kept from the start)
        copies = needs & {"update", "before", "moved"}
        self._step_norms = StepNorms(self._recorder.params, track_moved="moved" in needs) if copies else None
        self._measure_step = bool({"update", "before"} & needs)
        self._hist_qs = [q for q in registry.HIST.values() if q.name in quantities]  # gradient histograms
        self._hist: dict = {}  # their rows (hist.csv) not yet assembled into frames
        self._pending = None  # (step, Record, params rows) waiting for the optimizer step
        self._opt_hook = None
        self._stance = None  # torch.compile forced eager while armed (_eager)
        self._model_params = [p for p in inner.parameters() if p.requires_grad]
        self.steps = 0  # the number of step() calls so far: the next step's index
        self.recorded: list[int] = []  # the steps recorded so far
        self._rows = Rows()  # the grads and params rows of the recorded steps not yet assembled into frames
        self._log = _TrainLog()
        self._tables = {t: _Chunks() for t in TABLES}  # in_memory: every row
        self._files = None  # the AppendedRun once `out` is written
        self._unwritten: list[dict] = []  # frames assembled (by _assemble) but not yet written to `out`
        self._read = None  # in_memory=False: (rows written, RunResult read back)
        self._inexact: list[int] = []
        self._runs = {"recorded": StepRuns(), "inexact": StepRuns()}  # the same as runs, for meta.json
        self._fixed = None  # config.yaml and meta.json's fixed part, made at the first use
        self._armed = False
        self._entered = False
        self._lock = None
        self.tensorboard = Path(tensorboard) if tensorboard is not None and self.is_writer else None
        # tracker specs, checked now (every rank checks; only the writer logs)
        specs = check_log_to(log_to, tensorboard, self.name)
        self._log_to = specs if self.is_writer else []
        self._sinks = None  # the trackers' runs, open inside the `with`

    @property
    def running(self) -> bool:
        """Whether the watch is inside its `with` block (entered and not yet exited)."""
        return self._entered

    # -- the loop ---------------------------------------------------------------------------
    def __enter__(self) -> "Watch":
        if self.out is not None and self._writes:
            self._lock = ExitStack()
            try:
                check_out_path(self.out)  # (before the lock beside it is made)
                self._lock.enter_context(results_lock(self.out))
                check_out_dir(self.out, self._force)
            except BaseException:
                self._lock.close()
                self._lock = None
                raise
        if self._log_to:
            try:
                self._sinks = Sinks(self._log_to, None, self.name, {"every": self.every})
            except BaseException:
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None
                raise
        self._started, self._t0 = datetime.now(timezone.utc), time.perf_counter()
        self._entered = True
        if self.steps % self.every == 0:
            self._arm()
        return self

    def __exit__(self, *exc) -> None:
        never = exc[0] is None and self.steps == 0 and self._armed and self._recorder.calls_seen
        self._disarm()  # a step left half done (no step() call) is not recorded
        self._entered = False
        self._complete_pending()  # (no optimizer step followed: NaN)
        try:
            if self.out is not None and self._writes:
                self.flush()
            elif self._sinks is not None:
                self._drain()
        finally:
            try:
                if self._sinks is not None:
                    sinks, self._sinks = self._sinks, None
                    sinks.close(summary_of(self.result().summary) if self.recorded else None)
            finally:
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None
        if never:
            raise ResflowError(
                f"watch: w.step() was never called while blocks ran {self._recorder.calls_seen} times; "
                "call w.step(loss) once per training step, after loss.backward()"
            )

    def step(self, loss=None) -> None:
        """End step `self.steps`: record it if it is a recorded step, note its loss, arm for the next."""
        if not self._entered:
            raise ResflowError("watch: step() outside the `with resflow.watch(...)` block")
        loss = _loss_value(loss)
        s = self.steps
        completed = self._complete_pending()  # the previous recorded step, its optimizer step now taken
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
            if not rec.layer:
                warnings.warn(
                    f"watch: step {s} was to be recorded, but no block of {type(self.model).__name__} ran a forward with "
                    "gradients enabled since the previous w.step() (no forward, one under torch.no_grad, or a copy "
                    "of the model): nothing recorded for it",
                    stacklevel=2,
                )
            else:
                self._finish(rec)
                if self._hist_qs:
                    self._add_hist(s, rec)
                if self._step_norms is not None and self._step_norms.tracks_moved:
                    moved = self._step_norms.moved()
                    rec.set_param("moved", [moved[i] for i in self._recorder.param_rows])
                if self._measure_step:  # its rows wait for the optimizer step (_on_optimizer_step)
                    self._pending = (s, rec, self._recorder.param_rows)
                    self._step_norms.before()
                    self._opt_hook = register_optimizer_step_post_hook(self._on_optimizer_step)
                else:
                    first = self._add_record(s, rec)
                    recorded = True
        self._log.add(s, loss, self._total_grad_norm(), time.perf_counter() - self._t0)
        if self._log.full():
            self._drain()
        if recorded and self._sinks is not None:
            self._drain()
            self._log_sinks(s, first)
        self.steps = s + 1
        if again and not self._armed:
            self._arm()
        elif self._armed:
            self._force_eager()  # (torch.compile first used after the arming)
        if (recorded or completed) and self.out is not None and self._writes:
            self.flush()

    def _add_hist(self, s: int, rec) -> None:
        """Step s's gradient histograms (the opt-in hist quantities), per params row, as hist.csv rows
        (with a GradScaler, the bins of the unscaled gradient); to the trackers too."""
        params, rows = self._recorder.params, self._recorder.param_rows
        scale = 1.0
        scaler = self.grad_scaler
        if scaler is not None and scaler.is_enabled() and not self._unscaled():
            scale = 1.0 / float(scaler.get_scale())
        new: dict[str, list] = {c: [] for c in registry.HIST_COLUMNS}
        for layer, name, i in zip(rec.param_layer, rec.param_name, rows):
            grad = params[i].grad
            if grad is None:
                continue
            for q in self._hist_qs:
                bins = q.tensor(grad)
                k = len(bins["count"])
                for key, value in (("variant", self.name), ("seed", 0), ("step", s), ("layer", layer), ("param", name)):
                    new[key] += [value] * k
                new["bin_lo"] += [v * scale for v in bins["bin_lo"]]
                new["bin_hi"] += [v * scale for v in bins["bin_hi"]]
                new["count"] += bins["count"]
        for key, values in new.items():
            self._hist.setdefault(key, []).extend(values)
        if self._sinks is not None:
            self._sinks.log_hist(s, [dict(zip(new, r)) for r in zip(*new.values())])

    def _add_record(self, s: int, rec) -> int:
        """Step s's Record as rows; returns the index of its first grads row."""
        first = len(self._rows.grads.get("step", ()))
        self._rows.add(rec, self.name, seed=0, step=s)
        self.recorded.append(s)
        self._runs["recorded"].add(s)
        if not rec.norms_exact:
            self._inexact.append(s)
            self._runs["inexact"].add(s)
        return first

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Opt-in step quantities: after an optimizer step over the watched parameters, the update's norms."""
        ours = {id(p) for p in self._step_norms.params}
        if self._step_norms.pending and any(id(p) in ours for g in optimizer.param_groups for p in g["params"]):
            self._pending = (*self._pending[:3], self._step_norms.after())
            self._remove_opt_hook()

    def _remove_opt_hook(self) -> None:
        if self._opt_hook is not None:
            self._opt_hook.remove()
            self._opt_hook = None

    def _complete_pending(self) -> bool:
        """Opt-in step quantities: the recorded step waiting for its optimizer step, as rows (NaN if none came)."""
        if self._pending is None:
            return False
        (s, rec, rows, *norms), self._pending = self._pending, None
        self._remove_opt_hook()
        if self._step_norms.pending:  # no optimizer step over these parameters (or GradScaler skipped it)
            self._step_norms.after()
        update, before = norms[0] if norms else (None, None)  # (no optimizer step came: NaN)
        add_step(rec, rows, update, before)
        first = self._add_record(s, rec)
        if self._sinks is not None:
            self._drain()
            self._log_sinks(s, first)
        return True

    def _log_sinks(self, s: int, first: int) -> None:
        """Step s's grads rows (from index `first` on), to every tracker of log_to."""
        columns = ("layer", "sublayer", *MEASURES)
        grads = self._rows.grads
        rows = [{c: grads[c][i] for c in columns if c in grads} for i in range(first, len(grads["step"]))]
        self._sinks.log(s, rows, None)

    def _drain(self) -> None:
        """Read the buffered losses and gradient norms (one transfer) into train rows; to the trackers too."""
        rows = self._log.drain(self.name)
        if rows and self._sinks is not None:
            for step, loss, norm in zip(rows["step"], rows["loss"], rows["grad_norm_total"]):
                self._sinks.log(step, (), {"loss": loss, "grad_norm_total": norm})

    def _total_grad_norm(self):
        """This step's total gradient norm as a 0-dim tensor: of the global (reduced, unsharded) gradient
        under FSDP2 (the shards' squares summed over the ranks), of the unscaled one under a GradScaler."""
        local = self._dp.local if self._dp is not None else None
        norm = total_grad_norm(self._model_params, local=local)
        if norm is None:
            return None
        if local is not None:  # FSDP2: each rank holds a shard of every gradient
            squared = (norm.double() ** 2).reshape(1)
            torch.distributed.all_reduce(squared)
            norm = squared.sqrt()[0]
        scaler = self.grad_scaler
        if scaler is not None and scaler.is_enabled() and not self._unscaled():
            norm = norm / float(scaler.get_scale())
        return norm

    def _unscaled(self) -> bool:
        """Whether `scaler.unscale_` ran this step (the gradients are no longer scaled)."""
        states = getattr(self.grad_scaler, "_per_optimizer_states", {}).values()
        return any(getattr(st.get("stage"), "name", "") == "UNSCALED" for st in states)

    def _finish(self, rec) -> None:
        """A collected step's Record made the global, unscaled step's: reduced over the ranks
        (DDP/FSDP2) and the GradScaler's scale divided out."""
        if self._dp is not None:
            self._dp.reduce(rec)
        scaler = self.grad_scaler
        if scaler is not None and scaler.is_enabled():
            scale = 1.0 / float(scaler.get_scale())
            states = getattr(scaler, "_per_optimizer_states", {}).values()
            unscaled = any(getattr(st.get("stage"), "name", "") == "UNSCALED" for st in states)  # unscale_ ran
            rec.scale_gradients(scale, 1.0 if unscaled else scale)

    def _arm(self) -> None:
        self._recorder.reset()
        self._recorder.__enter__()
        self._armed = True
        self._force_eager()

    def _force_eager(self) -> None:
        if self._stance is None:
            self._stance = _eager()

    def _disarm(self) -> None:
        if self._armed:
            self._recorder.__exit__(None, None, None)
            self._armed = False
        if self._stance is not None:
            self._stance.__exit__(None, None, None)
            self._stance = None

    # -- tables -----------------------------------------------------------------------------
    def _assemble(self) -> dict:
        """The rows since the last call as frames ({table: DataFrame or None}: grads, params, summary,
        train), each step's summary computed here, once; kept (in_memory) and returned."""
        if not self._entered:  # (inside the `with`, a step waiting for its optimizer step stays out)
            self._complete_pending()
        self._drain()
        train = self._log.rows
        if not self._rows.grads.get("step") and not train["step"]:
            return {}
        result = _result(Rows(self._rows.grads, self._rows.params, train if train["step"] else None), self._named)
        hist = None
        if self._hist:
            import pandas as pd

            hist = pd.DataFrame(self._hist)[registry.HIST_COLUMNS]
        self._rows, self._hist = Rows(), {}
        self._log.rows = _TrainLog.new_rows()
        new = {t: getattr(result, t) for t in ("grads", "params", "summary")}
        new = {t: df if len(df) else None for t, df in new.items()}
        new["train"] = result.train
        new["hist"] = hist
        if self.in_memory:
            for table, df in new.items():
                if df is not None:
                    self._tables[table].add(df)
        if self.out is not None and self._writes:
            self._unwritten.append(new)
        return new

    def _frames_so_far(self) -> dict:
        """Every table as one DataFrame (in_memory), concatenated only when rows were added."""
        self._assemble()
        empty = _result(Rows(), self._named)
        frames = {t: self._tables[t].frame() for t in TABLES}
        for t in ("grads", "params", "summary"):
            if frames[t] is None:
                frames[t] = getattr(empty, t)
        return frames

    def _config_meta(self) -> tuple[dict, dict]:
        """config.yaml (what was asked: the same all run long) and meta.json (what happened so far:
        steps, the recorded ones as runs, the wall time), their fixed parts made once."""
        if self._fixed is None:
            config = _config(self.model, self._named, self.name, "yours", {"watch": {"every": self.every}})
            self._fixed = (config, _meta(self.model, self._started, self._t0))
        config, meta = self._fixed
        meta = {
            **meta,
            "steps": self.steps,
            "recorded": len(self.recorded),
            "recorded_steps": [list(r) for r in self._runs["recorded"].runs],
            "inexact_norm_steps": [list(r) for r in self._runs["inexact"].runs],
            "wall_time_s": round(time.perf_counter() - self._t0, 6),
        }
        return config, meta

    def result(self) -> RunResult:
        """Everything recorded so far, as `resflow.run` returns it (train: each step's loss and total
        gradient norm). With in_memory=False, read back from `out` (None-free empty tables before the
        first recorded step)."""
        if not self.in_memory:
            return self._read_back()
        frames = self._frames_so_far()
        config, meta = self._config_meta()
        return RunResult(**{t: _view(df) for t, df in frames.items()}, config=config, meta=meta, path=self.out)

    def _read_back(self) -> RunResult:
        from resflow.results.files import read_run

        if self._entered and self._files is not None:
            self.flush()
        if self._files is None:
            config, meta = self._config_meta()
            empty = _result(Rows(), self._named, config=config, meta=meta)
            empty.path = self.out
            return empty
        if self._read is None or self._read[0] != self.steps:
            self._read = (self.steps, read_run(self.out))
        return self._read[1]

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
        """Write what was recorded since the last flush to `out`: the whole results dir at the first
        recorded step, appended rows after (nothing before the first recorded step)."""
        if not self.is_writer:  # a rank other than 0: rank 0 writes the global step's rows
            return
        if self.out is None:
            raise ResflowError("watch: flush() needs out=<a results dir>")
        self._assemble()
        if not self._writes or not self.recorded or not self._unwritten:
            return
        config, meta = self._config_meta()
        new = _concat(self._unwritten)
        if self._files is None:
            files = AppendedRun(self.out)
            if self.in_memory:
                result = self.result()
            else:
                empty = _result(Rows(), self._named)
                empty = {t: getattr(empty, t) for t in ("grads", "params", "summary")}
                result = RunResult(**{**empty, **{t: df for t, df in new.items() if df is not None}}, config=config, meta=meta)
            files.start(result, force=self._force)
            self._files = files
        else:
            self._files.append(new, config, meta)
        self._unwritten = []

    @property
    def grads(self):
        return self.result().grads if not self.in_memory else _view(self._frames_so_far()["grads"])

    @property
    def params(self):
        return self.result().params if not self.in_memory else _view(self._frames_so_far()["params"])

    @property
    def summary(self):
        return self.result().summary if not self.in_memory else _view(self._frames_so_far()["summary"])

    @property
    def train(self):
        return self.result().train if not self.in_memory else _view(self._frames_so_far()["train"])


def _concat(parts: list[dict]) -> dict:
    """{table: the parts' frames of that table, concatenated} (None where no part has one)."""
    import pandas as pd

    out = {}
    for t in TABLES:
        frames = [p[t] for p in parts if p.get(t) is not None]
        out[t] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True) if frames else None
    return out


def _view(df):
    """A new DataFrame sharing `df`'s data (pandas copy-on-write: changing it leaves the kept one alone)."""
    return None if df is None else df.copy(deep=False)


class _Chunks:
    """A table kept as DataFrame chunks: one added per recorded step, merged as a binary counter does
    (two chunks of about the same size become one), so O(log rows) chunks are kept and each row is
    copied O(log rows) times; `frame()` concatenates them once until the next `add`."""

    def __init__(self):
        self.chunks: list = []

    def add(self, df) -> None:
        import pandas as pd

        self.chunks.append(df)
        while len(self.chunks) > 1 and len(self.chunks[-2]) <= len(self.chunks[-1]):
            self.chunks[-2:] = [pd.concat(self.chunks[-2:], ignore_index=True)]

    def frame(self):
        import pandas as pd

        if not self.chunks:
            return None
        if len(self.chunks) > 1:
            self.chunks = [pd.concat(self.chunks, ignore_index=True)]
        return self.chunks[0]


class _TrainLog:
    """Each step's loss and total gradient norm, written into preallocated float64 buffers on the
    device they are on (no host sync per step) and read to the host CHUNK steps at a time."""

    CHUNK = 256

    def __init__(self):
        self.steps: list[int] = []
        self.walls: list[float] = []
        self.buffers: dict[str, torch.Tensor] = {}
        self.rows = self.new_rows()

    @staticmethod
    def new_rows() -> dict:
        return {"variant": [], "seed": [], "step": [], "loss": [], "grad_norm_total": [], "wall_time_s": []}

    def add(self, step: int, loss, grad_norm, wall: float) -> None:
        i = len(self.steps)
        for key, value in (("loss", loss), ("grad_norm_total", grad_norm)):
            buf = self.buffers.get(key)
            if buf is None:
                device = value.device if isinstance(value, torch.Tensor) else torch.device("cpu")
                buf = self.buffers[key] = torch.full((self.CHUNK,), math.nan, dtype=torch.float64, device=device)
            if isinstance(value, torch.Tensor):
                buf[i].copy_(value.detach().reshape(()))
            else:
                buf[i] = math.nan if value is None else value
        self.steps.append(step)
        self.walls.append(wall)

    def full(self) -> bool:
        return len(self.steps) >= self.CHUNK

    def drain(self, variant: str) -> dict | None:
        """Move the buffered steps into `rows` (one transfer per buffer); the rows added, or None."""
        n = len(self.steps)
        if not n:
            return None
        values = {key: buf[:n].tolist() for key, buf in self.buffers.items()}
        added = {
            "variant": [variant] * n,
            "seed": [0] * n,
            "step": self.steps,
            "loss": values["loss"],
            "grad_norm_total": values["grad_norm_total"],
            "wall_time_s": self.walls,
        }
        for key, column in added.items():
            self.rows[key].extend(column)
        for buf in self.buffers.values():
            buf.fill_(math.nan)
        self.steps, self.walls = [], []
        return added


def total_grad_norm(params, local=None) -> torch.Tensor | None:
    """||all parameters' gradients|| (those that have one) as a 0-dim tensor, without a host sync:
    one fused `torch._foreach_norm` per device, then the norm of those norms (in float64 when on
    several devices). None when no parameter has a gradient."""
    grads = [p.grad if local is None else local(p.grad) for p in params if p.grad is not None]  # local: FSDP2's shards
    if not grads:
        return None
    try:
        norms = torch._foreach_norm(grads)
    except (RuntimeError, NotImplementedError):  # (sparse gradients)
        norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]
    device = norms[0].device
    if any(n.device != device for n in norms):
        norms = [n.to(device=device, dtype=torch.float64) for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms).to(torch.float64) if len(norms) > 1 else norms[0].double())


def _loss_value(loss):
    """`w.step`'s loss as a one-element tensor or a float (None: not given); anything else is a one-line error."""
    if loss is None:
        return None
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ConfigError(f"w.step(loss): the loss must be a scalar (one number), got a tensor of shape {tuple(loss.shape)}")
        if loss.is_complex():
            raise ConfigError("w.step(loss): the loss must be a real number, got a complex tensor")
        return loss.detach()
    if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
        shown = repr(loss)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"w.step(loss): the loss must be a number or a one-element tensor, got {type(loss).__name__} {shown}")
    return float(loss)


class StepRuns:
    """Steps as [first, last, stride] runs (0, 10, 20, 40 -> [[0, 20, 10], [40, 40, 1]]), added one
    at a time in O(1): meta.json's size and the cost of writing it stay that of the runs."""

    def __init__(self):
        self.runs: list[list[int]] = []

    def add(self, s: int) -> None:
        if self.runs:
            first, last, stride = self.runs[-1]
            if first == last and s > last:
                self.runs[-1] = [first, s, s - last]
                return
            if s - last == stride:
                self.runs[-1][1] = s
                return
        self.runs.append([s, s, 1])


def step_ranges(steps) -> list[list[int]]:
    runs = StepRuns()
    for s in steps:
        runs.add(s)
    return runs.runs


def check_materialised(model) -> None:
    """A one-line error for a model whose weights are on the meta device (shapes without data)."""
    for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in tensors:
            if t.is_meta:
                raise ConfigError(
                    f"the model's {kind} {name!r} is on the meta device (no data: built under torch.device('meta') "
                    "or init_empty_weights); materialise it first, e.g. model.to_empty(device='cpu') and load its weights"
                )


def watch(
    model,
    *,
    blocks=None,
    every: int = 1,
    out=None,
    name=None,
    force: bool = False,
    tensorboard=None,
    log_to=None,
    grad_scaler=None,
    in_memory: bool = True,
    quantities: Sequence[str] = (),
) -> Watch:
    """A context manager recording `model`'s gradient flow inside your own training loop (see Watch);
    `log_to` ("tensorboard:LOGDIR", "wandb[:PROJECT]", "mlflow[:URI]", or a list) also logs each
    recorded step's scalars there, live; `tensorboard=LOGDIR` is `log_to="tensorboard:LOGDIR"`;
    `grad_scaler`: a torch.amp.GradScaler whose scale is divided out of the recorded norms;
    `in_memory=False` keeps nothing but the files in `out`; `quantities`: the opt-in quantities of
    resflow.quantities to measure too (`opt_in_quantities()`), e.g. the optimizer update relative to the
    weights, measured across your `opt.step()` (a copy of the parameters, held from `w.step()` to
    `opt.step()`; that step's rows appear once it is taken)."""
    return Watch(
        model,
        blocks=blocks,
        every=every,
        out=out,
        name=name,
        force=force,
        tensorboard=tensorboard,
        log_to=log_to,
        grad_scaler=grad_scaler,
        in_memory=in_memory,
        quantities=quantities,
    )


def opt_in_quantities() -> list[str]:
    """The quantities `watch(..., quantities=[...])` can opt into (resflow.quantities)."""
    return sorted({q.name for table in (registry.GRADS, registry.PARAMS, registry.HIST) for q in table.values() if q.opt_in})


def opt_in_needs(names) -> set[str]:
    """The primitives the opt-in quantities `names` need; a one-line ConfigError for a name that is not one."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"quantities: a list of quantity names, got {names!r}")
    allowed = opt_in_quantities()
    needs: set[str] = set()
    for name in names:
        if name not in allowed:
            raise ConfigError(f"quantities: {name!r} is not an opt-in quantity; one of {', '.join(allowed)}")
        for table in (registry.GRADS, registry.PARAMS, registry.HIST):
            if name in table:
                needs |= set(table[name].needs)
    return needs
