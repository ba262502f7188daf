"""`resflow compare A B ...`: run several configs with the same overrides and put them side by side.

Each REF is a YAML path or a bundled config name; its `variant` is the config's name. The points run
through the sweep's backends (in parallel when there are several cores) and come back in REF order.
`resflow compare pre-norm post-norm` compares the transformer configs; `mlp-pre-norm mlp-post-norm` the MLPs.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

from resflow.config.loading import load_config
from resflow.config.schema import Config
from resflow.errors import ConfigError


def split_ref(ref: str) -> tuple[str, list[str]]:
    """'microgpt[model.init.zero_out=false,model.depth=4]' -> ('microgpt', ['model.init.zero_out=false',
    'model.depth=4']): a REF with its own overrides (applied after the common --set). A comma inside a
    value (a list) stays with it. An existing file of that name is a path, brackets and all."""
    match = re.fullmatch(r"(.+?)\[(.*)\]", ref)
    if match is None or Path(ref).exists():
        return ref, []
    items: list[str] = []
    for part in match.group(2).split(","):
        if "=" in part.split("[")[0] or not items:
            items.append(part.strip())
        else:
            items[-1] += "," + part
    if not all("=" in item and item.split("=", 1)[0] for item in items):
        raise ConfigError(f"compare {ref!r}: expected NAME[KEY=VALUE,...], e.g. 'microgpt[model.init.zero_out=false]'")
    return match.group(1), items


def _variant_name(name: str, own: list[str]) -> str:
    """'microgpt' + ['model.init.zero_out=false'] -> 'microgpt+init_zero_out=false' (a valid config name:
    the variant column and the results dir's name)."""
    from resflow.sweep.plan import short_key

    parts = [f"{short_key(item.split('=', 1)[0].strip())}={item.split('=', 1)[1].strip()}" for item in own]
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", "+".join([name, *parts]))


def load_refs(refs: list[str], overrides: list[str]) -> dict[str, Config]:
    """name -> config, in REF order (a repeated name gets -2, -3, ...). A REF may carry its own
    overrides, NAME[KEY=VALUE,...]; its variant is then named NAME+key=value."""
    if len(refs) < 2:
        raise ConfigError(f"compare needs at least two configs, got {len(refs)}")
    configs: dict[str, Config] = {}
    for ref in refs:
        base, own = split_ref(ref)
        try:
            cfg = load_config(base, list(overrides) + own)
        except ConfigError as err:
            raise ConfigError(f"compare {ref!r}: {err}" if own else str(err)) from None
        if own:
            cfg = cfg.replace({"name": _variant_name(cfg.name, own)})
        name, k = cfg.name, 2
        while name in configs:
            name, k = f"{cfg.name}-{k}", k + 1
        configs[name] = cfg if name == cfg.name else cfg.replace({"name": name})
    return configs


def run_compare(configs: dict[str, Config], workers: int | None = None, on_start=None, on_point=None, allow_code=None):
    """Run each config (one sweep point each) and return one RunResult holding all of them.
    `on_start(total, 0)` before, `on_point(point)` as each config finishes (progress); `allow_code`:
    may a `module:callable` factory run (resflow.models.factory.check; unset: RESFLOW_ALLOW_CODE)."""
    import functools

    from resflow._sys.code import check, code_allowed
    from resflow.executors import pool as backends
    from resflow.results.meta import run_meta
    from resflow.results.tables import RunResult
    from resflow.sweep.plan import Point, point_hash
    from resflow.sweep.runner import run_point, tables

    allow_code = code_allowed(allow_code)  # decided here, once, and sent with every task
    for cfg in configs.values():
        check(cfg.model.factory, allow_code)
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
    task = functools.partial(run_point, allow_code=True) if allow_code else run_point  # (a worker's default: refuse)
    backends.execute(points, task, save, workers=workers)
    import json

    frames = tables([json.loads(texts[p.index]) for p in points], [])
    meta = run_meta(started, t0, kind="compare", refs=list(configs))
    config = {"compare": {name: cfg.to_dict() for name, cfg in configs.items()}}
    return RunResult(
        grads=frames["grads"], params=frames["params"], summary=frames["summary"], config=config, meta=meta, train=frames["train"]
    )
