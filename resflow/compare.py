"""`resflow compare A B ...`: run several configs with the same overrides and put them side by side.

Each REF is a YAML path or a bundled config name; its `variant` is the config's name. The points run
through the sweep's backends (in parallel when there are several cores) and come back in REF order.
`resflow compare pre-norm post-norm` compares the transformer configs; `mlp-pre-norm mlp-post-norm` the MLPs.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from resflow.config.loading import load_config
from resflow.config.schema import Config
from resflow.errors import ConfigError


def load_refs(refs: list[str], overrides: list[str]) -> dict[str, Config]:
    """name -> config, in REF order (a repeated name gets -2, -3, ...)."""
    if len(refs) < 2:
        raise ConfigError(f"compare needs at least two configs, got {len(refs)}")
    configs: dict[str, Config] = {}
    for ref in refs:
        cfg = load_config(ref, overrides)
        name, k = cfg.name, 2
        while name in configs:
            name, k = f"{cfg.name}-{k}", k + 1
        configs[name] = cfg if name == cfg.name else cfg.replace({"name": name})
    return configs


def run_compare(configs: dict[str, Config], workers: int | None = None, on_start=None, on_point=None):
    """Run each config (one sweep point each) and return one RunResult holding all of them.
    `on_start(total, 0)` before, `on_point(point)` as each config finishes (progress)."""
    from resflow._sys import workers as backends
    from resflow.results.meta import run_meta
    from resflow.results.tables import RunResult
    from resflow.sweep.plan import Point, point_hash
    from resflow.sweep.runner import run_point, tables

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    points = []
    for index, (name, cfg) in enumerate(configs.items()):
        config = cfg.to_dict()
        points.append(Point(index, name, {}, config, point_hash(config, name, {})))
    texts: dict[int, str] = {}
    workers = backends.default_workers() if workers is None else workers
    def save(point, text: str) -> None:
        texts[point.index] = text
        if on_point is not None:
            on_point(point)

    if on_start is not None:
        on_start(len(points), 0)
    backends.execute(points, run_point, save, workers=workers)
    import json

    frames = tables([json.loads(texts[p.index]) for p in points], [])
    meta = run_meta(started, t0, kind="compare", refs=list(configs))
    config = {"compare": {name: cfg.to_dict() for name, cfg in configs.items()}}
    return RunResult(grads=frames["grads"], params=frames["params"], summary=frames["summary"], config=config, meta=meta,
                     train=frames["train"])
