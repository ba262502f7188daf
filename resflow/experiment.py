"""Wire config, model, recorder and results together: `run(config) -> RunResult`.

For each seed: seed torch's RNG (inside fork_rng, so the caller's RNG state is untouched), build and
initialise the model, draw the batch and the loss from the seed's data generator, run one forward
and backward under the recorder, and add its floats to the tidy tables.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import torch

from resflow.config.memory import check_memory
from resflow.config.schema import Config
from resflow.measure.data import data_generator, make_input, make_loss, model_io
from resflow.measure.device import DTYPES, input_shape, resolve_device
from resflow.measure.recorder import Record, Recorder
from resflow.models import build_model
from resflow.models.init import seed_rng
from resflow.results.assemble import Rows, assemble
from resflow.results.meta import run_meta
from resflow.results.tables import RunResult, config_columns
from resflow.theory.overlay import overlay
from resflow.theory.predict import predict


def prepare_seed(cfg: Config, seed: int, device: torch.device):
    """One seed's model (initialised), input batch and loss function: `loss_fn(model(x)).backward()`."""
    dtype = DTYPES[cfg.dtype]
    io = model_io(cfg)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seed_rng(seed, device)
        model = build_model(cfg.model, device=device, dtype=dtype, io=io)
    gen = data_generator(seed)
    labels = None
    if cfg.data.dataset is not None:  # a real batch: the first training batch this seed's training would take
        from resflow.measure.datasets import Batches, as_input, load

        images, labels = Batches(load(cfg.data.dataset), gen).next(cfg.data.batch_size)
        x, labels = as_input(images, cfg.model.images), labels.to(device)
    else:
        x = make_input(cfg.data, input_shape(cfg), gen)
    x = x.to(device=device, dtype=dtype).requires_grad_(True)
    out_shape = (x.shape[0], io[1]) if io is not None else tuple(x.shape)
    loss_fn = make_loss(cfg.loss, out_shape, gen, device, dtype, labels=labels)
    return model, x, loss_fn


def measure_seed(cfg: Config, seed: int, device: torch.device, exact: bool = False) -> Record:
    """One seed at initialisation: build, forward, backward, record. If a norm may have under- or
    overflowed in the model's dtype (resflow.measure.recorder), the same step again with float64 norms
    (`exact`: only that)."""
    model, x, loss_fn = prepare_seed(cfg, seed, device)
    for exact in (True,) if exact else (False, True):
        model.zero_grad(set_to_none=True)
        x.grad = None
        with Recorder(model, exact=exact) as rec:
            loss_fn(model(x)).backward()
            record = rec.collect()
        if record.norms_exact:
            return record
    return record  # (unreachable: an exact Recorder's Record is exact)


def measure_all(cfg: Config, device: torch.device):
    """(seed, Record) for every seed: all seeds in one batched pass where the model allows it."""
    from resflow.measure import batched

    if not batched.supports(cfg):
        for seed in cfg.seed_list:
            yield seed, measure_seed(cfg, seed, device)
        return
    for chunk in batched.chunks(cfg, cfg.seed_list):
        for seed, record in zip(chunk, batched.measure_seeds(cfg, chunk, device, DTYPES[cfg.dtype])):
            # a norm that may have under/overflowed: that seed alone again, with float64 norms
            yield seed, record if record.norms_exact else measure_seed(cfg, seed, device, exact=True)


def run(cfg: Config, on_seed=None, on_step=None, allow_code: bool | None = None) -> RunResult:
    """Measure every seed of `cfg`; returns the tables that the CSVs hold (nothing is written).

    With `train.steps` > 0 the seeds are trained instead (resflow.train.loop); `on_step` sees each step.
    `allow_code=True` lets a `model.factory: module:callable` run (code the config names); unset, the
    environment variable RESFLOW_ALLOW_CODE=1 does; `hf:` and registered factories need neither.
    """
    if cfg.model.factory is not None:  # any model a factory builds (resflow.anymodel)
        from resflow.anymodel import run_factory

        return run_factory(cfg, on_seed=on_seed, allow_code=allow_code)
    check_memory(cfg)  # refuse up front what the machine cannot hold
    if cfg.train.steps > 0:
        from resflow.train.loop import train

        return train(cfg, on_seed=on_seed, on_step=on_step)
    device = resolve_device(cfg.device)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    rows = Rows()
    for seed, rec in measure_all(cfg, device):
        rows.add(rec, cfg.name, seed, step=0)
        if on_seed is not None:
            on_seed(seed)
    prediction = predict(cfg)  # theory beside measurement
    meta = run_meta(
        started,
        t0,
        device=str(device),
        dtype=cfg.dtype,
        seeds=cfg.seed_list,
        theory=prediction.model if prediction else f"no prediction: {prediction.reason}",
    )
    return assemble(rows, config_columns(cfg), overlay=overlay(prediction), config=cfg.to_dict(), meta=meta)
