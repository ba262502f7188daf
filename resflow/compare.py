"""`resflow compare A B ...`: run several configs with the same overrides and put them side by side.

Each REF is a YAML path or a bundled config name; its `variant` is the config's name. The points run
through the sweep's backends (in parallel when there are several cores) and come back in REF order.
`pre-norm` / `post-norm` fall back to the MLP configs `mlp-pre-norm` / `mlp-post-norm` while no bundled
config of that name exists (the transformer configs take over once they are added).
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone

from resflow import __version__
from resflow.config import Config, load_config
from resflow.errors import ConfigError

FALLBACKS = {"pre-norm": "mlp-pre-norm", "post-norm": "mlp-post-norm"}


def load_refs(refs: list[str], overrides: list[str]) -> tuple[dict[str, Config], list[str]]:
    """name -> config, in REF order (a repeated name gets -2, -3, ...), and notes on fallbacks used."""
    if len(refs) < 2:
        raise ConfigError(f"compare needs at least two configs, got {len(refs)}")
    configs: dict[str, Config] = {}
    notes = []
    for ref in refs:
        try:
            cfg = load_config(ref, overrides)
        except ConfigError:
            if ref not in FALLBACKS:
                raise
            cfg = load_config(FALLBACKS[ref], overrides)
            notes.append(f"note: no bundled config {ref!r} yet; using {FALLBACKS[ref]!r} (the MLP version) as {ref!r}")
            cfg = cfg.replace({"name": ref})
        name, k = cfg.name, 2
        while name in configs:
            name, k = f"{cfg.name}-{k}", k + 1
        configs[name] = cfg if name == cfg.name else cfg.replace({"name": name})
    return configs, notes


def run_compare(configs: dict[str, Config], workers: int | None = None):
    """Run each config (one sweep point each) and return one RunResult holding all of them."""
    from resflow import backends
    from resflow.results import RunResult
    from resflow.sweep import Point, point_hash, tables

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    points = []
    for index, (name, cfg) in enumerate(configs.items()):
        config = cfg.to_dict()
        points.append(Point(index, name, {}, config, point_hash(config, name, {})))
    texts: dict[int, str] = {}
    workers = backends.default_workers() if workers is None else workers
    backends.execute(points, lambda p, text: texts.__setitem__(p.index, text), workers=workers)
    import json

    frames = tables([json.loads(texts[p.index]) for p in points], [])
    meta = dict(
        kind="compare",
        refs=list(configs),
        resflow=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        started=started.isoformat(timespec="seconds"),
        wall_time_s=round(time.perf_counter() - t0, 6),
        command=" ".join(sys.argv),
    )
    config = {"compare": {name: cfg.to_dict() for name, cfg in configs.items()}}
    return RunResult(grads=frames["grads"], params=frames["params"], summary=frames["summary"], config=config, meta=meta)
