"""How much memory a run will need, estimated from its config alone, and the check that refuses a
run the machine cannot hold (before anything is built, instead of being killed by the OS).

    estimate(cfg)        -> Estimate: bytes per term (parameters, activations, result rows)
    check_memory(cfg)    -> raises ResflowError if the estimate exceeds the memory available

Seeds run one after another, so parameters and activations count once; the result rows grow with
seeds x sites. A sweep running points in parallel passes `parallel` (its worker count).
The limit is MemAvailable (Linux; the cgroup limit if lower), or $RESFLOW_MEMORY_LIMIT (e.g. 8GB;
`none` switches the check off). Pure arithmetic: no torch here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from resflow.config.limits import IMAGES
from resflow.errors import ResflowError

BYTES = {"float32": 4, "float64": 8}
ROW_BYTES = 1024  # one (seed, site) of grads.csv + its params.csv rows: lists, DataFrame, CSV text
HEADROOM = 0.9  # refuse above this fraction of the available memory
UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30, "T": 2**40, "TB": 2**40}


@dataclass(frozen=True)
class Estimate:
    params: int  # weights and their gradients
    activations: int  # tensors kept for backward, the recorder's inputs and gradients, per seed
    rows: int  # the result tables of all seeds
    keys: dict  # term -> the config key that shrinks it most

    @property
    def total(self) -> int:
        return self.params + self.activations + self.rows

    def largest(self) -> tuple[str, str]:
        """(term, key to change) of the largest term."""
        term = max(("params", "activations", "rows"), key=lambda t: getattr(self, t))
        return term, self.keys[term]


def _inputs(m, d) -> int:
    """A dataset's MLP stem (pixels -> width) and head (width -> classes), if any."""
    if d.dataset is None or m.images:
        return 0
    (C, H, W), classes = IMAGES[d.dataset]
    return C * H * W * m.width + m.width + m.width * classes + classes


def estimate(cfg) -> Estimate:
    """Training (train.steps > 0) runs at train.batch_size, keeps W_0 (for `movement`), the previous
    weights (for the step's update ratio), their differences and the optimizer's state (Adam: two moments), and
    has result rows at every recorded step."""
    if getattr(cfg.model, "factory", None) is not None:  # a factory's model: unknown until it is built
        return Estimate(0, 0, 0, {"params": "model.kwargs", "activations": "data.shape", "rows": "seeds"})
    data, copies, recorded = cfg.data, 2, 1  # weights + gradients; one measurement
    train = getattr(cfg, "train", None)
    if train is not None and train.steps:
        if train.batch_size:
            data = data.model_copy(update={"batch_size": train.batch_size})
        # + W_0 and W_prev, + the differences taken for the movement and the update ratio (measured: ~8 copies with Adam)
        copies = 2 + 2 + 2 + (2 if train.optimizer in ("adam", "adamw") else 0)
        from resflow.config.schema import record_steps

        recorded = len(record_steps(train.steps, train.record_every))
    params, acts, sites, keys = cfg.model.memory(data)  # the block family's own estimate
    params += _inputs(cfg.model, data)
    if data is not cfg.data:
        keys = {**keys, "activations": keys["activations"].replace("data.batch_size", "train.batch_size")}
    b = BYTES[cfg.dtype]
    return Estimate(
        params=copies * params * b,
        activations=acts * b,
        rows=cfg.seeds * sites * recorded * ROW_BYTES,
        keys={**keys, "rows": "seeds" if recorded == 1 else "seeds (or train.record_every)"},
    )


def parse_size(text: str) -> int | None:
    """'8GB' -> 8 * 2**30; 'none'/'off' -> None (no limit)."""
    t = text.strip().upper().replace(" ", "")
    if t in ("NONE", "OFF", "0", ""):
        return None
    num = t.rstrip("KMGTB")
    unit = t[len(num) :]
    try:
        size = float(num) * UNITS[unit]
    except (ValueError, KeyError):
        size = math.nan
    if not (math.isfinite(size) and size >= 1):  # -5, nan, inf, 0.1: not an amount of memory
        raise ResflowError(
            f"RESFLOW_MEMORY_LIMIT={text[:100]!r}: expected a positive size such as 8GB or 500MB, or none", exit_code=2
        )
    return int(size)


def available() -> int | None:
    """Bytes this process may still use: $RESFLOW_MEMORY_LIMIT, else MemAvailable / the cgroup limit."""
    env = os.environ.get("RESFLOW_MEMORY_LIMIT")
    if env is not None:
        return parse_size(env)
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit, usage = (Path("/sys/fs/cgroup") / f for f in ("memory.max", "memory.current"))
        if limit.read_text().strip() != "max":
            found.append(int(limit.read_text()) - int(usage.read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_memory(cfg, parallel: int = 1, limit: int | None = -1) -> Estimate:
    """Raise a ResflowError (exit 2) naming the estimate and the key to change if it cannot fit."""
    est = estimate(cfg)
    limit = available() if limit == -1 else limit
    need = est.total * max(1, parallel)
    if limit is not None and need > HEADROOM * limit:
        term, key = est.largest()
        what = {"params": "weights and gradients", "activations": "activations kept for backward", "rows": "result rows"}[term]
        par = f" × {parallel} workers" if parallel > 1 else ""
        raise ResflowError(
            f"this run needs about {human(need)}{par} (mostly {what}: {human(getattr(est, term))}) but only "
            f"{human(limit)} of memory is available; reduce {key} "
            f"(or set RESFLOW_MEMORY_LIMIT=none to run anyway)",
            exit_code=2,
        )
    return est


def check_plan_memory(plan, workers: int) -> Estimate:
    """A sweep: its largest point, times the points that run at once (`workers`, as resolved by the caller)."""
    from resflow.config.schema import validate

    configs = [validate(p.config) for p in plan.points]
    biggest = max(configs, key=lambda c: estimate(c).total)
    return check_memory(biggest, parallel=min(workers, len(configs)))
