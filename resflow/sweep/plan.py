"""Sweep plans: axes -> a grid of points, each a fully resolved, validated config.

An axis is a dotted config key and its values, from `--over KEY=V1,V2` or a `sweep:` section in the
YAML; several axes form a grid (Cartesian product, first axis slowest). A sweep over X sweeps X: only
when no axis is given at all does the sweep run over depth, 1, 2, 4, ... up to the config's depth (plus
that depth).
Every value is validated through the config's own validation, so errors name the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resflow._version import __version__
from resflow.config.families.base import doubling_depths
from resflow.config.loading import read_yaml, resolve_config_path
from resflow.config.schema import Config, parse_override, validate
from resflow.errors import ConfigError

NOT_SWEEPABLE = ("name", "sweep")


# ---------------------------------------------------------------------------------------------
# Axes


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config key, e.g. model.init.scale
    values: tuple  # validated values, as the config holds them (1 -> 1.0 for a float key)
    origin: str = "--over"  # "--over", "sweep:" or "default"

    @property
    def column(self) -> str:
        return short_key(self.key)


def short_key(key: str) -> str:
    """The CSV column of a swept key: the dotted key without its `model.`/`data.` section, dots as
    underscores (model.depth -> depth, model.init.scale -> init_scale, data.batch_size -> batch_size,
    seed -> seed): the same names as the config columns that every results CSV already has."""
    parts = key.split(".")
    if len(parts) > 1 and parts[0] in ("model", "data"):
        parts = parts[1:]
    return "_".join(parts)


def parse_over(item: str) -> tuple[str, list]:
    """'model.depth=1,2,5' -> ('model.depth', [1, 2, 5]); values read as YAML; `[a, b]` also works."""
    if "=" not in item:
        raise ConfigError(f"--over {item!r}: expected KEY=V1,V2,..., e.g. --over model.depth=1,2,5")
    key, raw = parse_override(item, flag="--over")  # checks the key's shape; the value is re-read below
    text = item.partition("=")[2].strip()
    if text.startswith("["):
        values = raw
    else:
        parts = [p.strip() for p in text.split(",")] if text else []
        if any(p == "" for p in parts):
            raise ConfigError(f"--over {item!r}: empty value in the list (write KEY=V1,V2,...)")
        try:
            values = [yaml.safe_load(p) for p in parts]
        except yaml.YAMLError:
            raise ConfigError(f"--over {item!r}: cannot read the values {text!r}") from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--over {key}: needs at least one value, e.g. --over {key}=V1,V2")
    return key, values


def yaml_axes(section: Any, source: str) -> list[tuple[str, list]]:
    """The YAML `sweep:` section: a mapping of dotted keys to non-empty lists of values."""
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: sweep: must be a mapping of dotted keys to lists, e.g. sweep: {{model.depth: [1, 2, 5]}}")
    axes = []
    for key, values in section.items():
        if not isinstance(values, list):
            raise ConfigError(f"{source}: sweep.{key}: must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{source}: sweep.{key}: the list of values is empty")
        axes.append((str(key), values))
    return axes


def default_depths(depth: int) -> list[int]:
    """1, 2, 4, 8, ... below `depth`, then `depth` itself (a block family may have its own rule:
    `cfg.model.default_depths()`)."""
    return doubling_depths(depth)


def validate_axis(base: Config, key: str, values: list, origin: str) -> Axis:
    """Each value through the config's validation; duplicates (after validation) are an error."""
    where = "--over " if origin == "--over" else "sweep: "
    if key in NOT_SWEEPABLE:
        raise ConfigError(f"{where}{key}: cannot be swept (each point is named after the sweep's config)")
    if not values:
        raise ConfigError(f"{where}{key}: the list of values is empty")
    seen = []
    for value in values:
        try:
            cfg = base.replace({key: value})
        except ConfigError as err:
            raise ConfigError(f"{where}{_as_axis(str(err), f'{key}={fmt_value(value)}')}") from None
        normal = get_key(cfg.to_dict(), key)
        if normal in seen:
            raise ConfigError(f"{where}{key}: the value {value!r} appears twice")
        seen.append(normal)
    return Axis(key, tuple(seen), origin)


def _as_axis(message: str, what: str) -> str:
    """A Config.replace error worded for a sweep's axis: the key's own error without its '--set ', a
    rule across keys ('config: ...') after the value that broke it (`what`, e.g. model.block=transformer)."""
    if message.startswith("--set "):
        return message[len("--set ") :]
    if message.startswith("config: "):
        return f"{what}: {message[len('config: ') :]}"
    return message


def get_key(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def merge_axes(base: Config, yaml_items: list[tuple[str, list]], cli_items: list[tuple[str, list]]) -> list[Axis]:
    """YAML axes in order; a command-line axis replaces the YAML one with the same key or is added;
    with no axis at all, the default depth axis (a sweep over X sweeps X, never X × depth)."""
    merged: dict[str, tuple[list, str]] = {key: (values, "sweep:") for key, values in yaml_items}
    given: set[str] = set()
    for key, values in cli_items:
        if key in given:
            raise ConfigError(
                f"--over {key}: given twice; one --over per key, with all its values (e.g. --over {key}=V1,V2,V3,V4)"
            )
        given.add(key)
        merged[key] = (values, "--over")
    axes = [validate_axis(base, key, values, origin) for key, (values, origin) in merged.items()]
    if not merged and base.model.factory is None:  # (a factory's model: its depth is a kwarg)
        axes.append(Axis("model.depth", tuple(base.model.default_depths()), "default"))
    seed_axis = next((a for a in axes if a.key == "seed"), None)
    seeds_axis = next((a for a in axes if a.key == "seeds"), None)
    most_seeds = max(seeds_axis.values) if seeds_axis else base.seeds
    if seed_axis is not None and most_seeds > 1:
        where = "--over seed" if seed_axis.origin == "--over" else "sweep: seed"
        raise ConfigError(
            f"{where}: a point runs seeds seed … seed+seeds−1 (seeds: {most_seeds}), so the points would share seeds and "
            f"each row would carry the swept value as its seed; for several seeds use --seeds N (or seeds: N) alone, "
            f"or sweep seed with --seeds 1"
        )
    columns = [a.column for a in axes]
    for col in set(columns):
        if columns.count(col) > 1:
            keys = [a.key for a in axes if a.column == col]
            raise ConfigError(f"--over: {' and '.join(keys)} would share the column {col!r}; sweep only one of them")
    return axes


# ---------------------------------------------------------------------------------------------
# Points and the plan


def fmt_value(value: Any) -> str:
    """A swept value in a variant label: true/false, 1 for 1.0, 0.1, tanh."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if value is None:
        return "null"
    return str(value)


@dataclass(frozen=True)
class Point:
    index: int  # position in the grid: the order of the final CSVs
    variant: str  # e.g. deep50[residual=true,depth=8]
    columns: dict  # swept column -> value
    config: dict  # the point's fully resolved config
    hash: str  # of everything that determines its rows

    @property
    def key(self) -> str:
        return f"{self.index:05d}-{self.hash}"

    @property
    def cost(self) -> float:
        """Relative work (multiply-adds of one forward, times seeds and steps): for scheduling only."""
        m, d, t = self.config["model"], self.config.get("data", {}), self.config.get("train", {})
        width, batch = m.get("width", 64), d.get("batch_size", 32)
        if m.get("block") == "transformer":
            tokens = batch * (d.get("seq_len") or 1)
            per_layer = tokens * (12 * width * width + 2 * (d.get("seq_len") or 1) * width)
        else:
            per_layer = batch * width * width
        steps = 1 + (t.get("steps") or 0) + (t.get("eval_batches") or 0) * 0.1
        return float(m.get("depth", 1)) * per_layer * self.config.get("seeds", 1) * steps


@dataclass
class Plan:
    base: Config
    axes: list[Axis]
    points: list[Point] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [a.column for a in self.axes]

    def config_yaml(self) -> dict:
        """base + axes: `resflow sweep <this config.yaml>` runs the same sweep."""
        data = self.base.to_dict()
        data["sweep"] = {a.key: list(a.values) for a in self.axes}
        return data

    def describe(self) -> str:
        parts = []
        for a in self.axes:
            note = " (default: no axis given)" if a.origin == "default" else ""
            parts.append(f"{a.key} = {', '.join(fmt_value(v) for v in a.values)}{note}")
        if not any(a.key == "model.depth" for a in self.axes) and self.base.model.factory is None:
            parts.append(f"model.depth = {self.base.model.depth} throughout (the config's)")
        return "; ".join(parts)

    def summary_line(self, out: Path | None = None) -> str:
        """The plan, printed before anything runs: points, seeds, runs, each axis, where it goes."""
        seeds = self.base.seeds
        runs = len(self.points) * seeds
        where = f" → {out}/" if out is not None else ""
        return (
            f"sweep {self.base.name}: {len(self.points)} points × {seeds} seed{'s' if seeds != 1 else ''} = {runs} runs; "
            f"{self.describe()}{where}"
        )


def point_hash(config: dict, variant: str, columns: dict) -> str:
    text = json.dumps([__version__, config, variant, columns], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def expand(base: Config, axes: list[Axis]) -> list[Point]:
    points = []
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        overrides = {a.key: v for a, v in zip(axes, combo)}
        try:
            cfg = base.replace(overrides)
        except ConfigError as err:
            what = ", ".join(f"{k}={fmt_value(v)}" for k, v in overrides.items())
            raise ConfigError(f"sweep point {what}: {str(err).removeprefix('--set ').removeprefix('config: ')}") from None
        if "loss" in overrides and cfg.train.steps:  # (and its column would overwrite train.csv's measured loss)
            raise ConfigError(
                "--over loss: the top-level loss is not used when training (train.task sets the loss); "
                "sweep train.task, or measure at initialisation (train.steps: 0)"
            )
        columns = {a.column: v for a, v in zip(axes, combo)}
        variant = f"{base.name}[{','.join(f'{c}={fmt_value(v)}' for c, v in columns.items())}]"
        config = cfg.to_dict()
        points.append(Point(index, variant, columns, config, point_hash(config, variant, columns)))
    return points


def load_base(ref: str | Path, overrides: list[str] | None = None) -> tuple[Config, list[tuple[str, list]]]:
    """A config (path or bundled name) and its YAML `sweep:` axes (validated later, with the CLI's)."""
    path = resolve_config_path(ref)
    data = read_yaml(path)
    section = data.pop("sweep", None)
    data.setdefault("name", path.stem)
    return validate(data, overrides=overrides or [], source=str(path)), yaml_axes(section, str(path))


def make_plan(base: Config, yaml_items=(), cli_axes: list[str] = ()) -> Plan:
    """The grid of points: the YAML `sweep:` axes, then `--over` strings (same key: replaced), plus
    the default depth axis only when there is no axis at all."""
    axes = merge_axes(base, list(yaml_items), [parse_over(item) for item in cli_axes])
    return Plan(base, axes, expand(base, axes))
