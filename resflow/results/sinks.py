"""Sinks: where per-layer gradient norms go as a run goes, one mechanism for TensorBoard, W&B and
MLflow. A sink is one tracker run with two calls:

    sink.log(step, rows, scalars, wall_time)   # rows: a recorded step's sites (layer, sublayer, norms)
    sink.close(summary)                         # summary: the run's summary.csv values

`open_sink(spec, run, hparams, config)` makes one from a spec string: "tensorboard:LOGDIR",
"wandb[:PROJECT]", "mlflow[:TRACKING_URI]". `resflow.watch(log_to=...)`, `resflow run --log-to`
and `resflow export --to` (which replays a results dir through the same sinks) all use it, so a
tracker shows the same keys whichever way the numbers came. `check_spec` validates a spec before
any work (the tracker's package installed, a W&B project name W&B accepts, an MLflow URI that
answers): a one-line ConfigError, nothing written. Tracker packages are imported only when used.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

from resflow.errors import ConfigError, ResflowError
from resflow.results.tensorboard_events import MEASURES, METRICS, TAGS, TensorBoardRun, layer_tag, layer_values, missing

KINDS = {  # spec kind -> (the pip extra, the package's import name)
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
MLFLOW_TIMEOUT_S = 10.0  # how long an http(s) MLflow URI may take to answer before it is called unreachable


class Sink(Protocol):
    def log(self, step: int, rows=(), scalars: dict | None = None, wall_time: float | None = None) -> None: ...

    def close(self, summary: dict | None = None) -> None: ...


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'wandb:proj' -> ('wandb', 'proj'); 'mlflow' -> ('mlflow', None). Unknown kinds are refused."""
    kind, _, target = str(spec).partition(":")
    if kind not in KINDS:
        raise ConfigError(
            f"log_to {spec!r}: unknown tracker {kind!r} (allowed: tensorboard:LOGDIR, wandb[:PROJECT], mlflow[:URI])"
        )
    if kind == "tensorboard" and not target:
        raise ConfigError(f"log_to {spec!r}: tensorboard needs a logdir, e.g. tensorboard:runs/live")
    return kind, target or None


def as_specs(log_to) -> list:
    """None, one spec, or a list of specs (strings or ready sinks) -> a list."""
    if log_to is None:
        return []
    if isinstance(log_to, (str, os.PathLike)) or hasattr(log_to, "log"):
        return [log_to]
    return list(log_to)


def check_installed(kind: str, what: str) -> None:
    extra, package = KINDS[kind]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f'{what} needs {package}: pip install "resflow[{extra}]" (or pip install {package})')


def check_wandb_project(project: str) -> None:
    """W&B's own rule for project names (wandb.Settings validates it), as a one-line ConfigError."""
    import wandb

    try:
        wandb.Settings(project=project)
    except Exception as err:  # noqa: BLE001 - pydantic wraps W&B's UsageError; its message is the reason
        reason = str(err).splitlines()
        reason = next((line for line in reason if "Invalid project name" in line), reason[-1] if reason else "")
        reason = reason.split("Value error, ")[-1].split(" [type=")[0].strip()
        raise ConfigError(f"W&B project {project!r} is refused by W&B: {reason}") from None


def check_mlflow_uri(uri: str | None) -> None:
    """An http(s) tracking server answers within MLFLOW_TIMEOUT_S (any HTTP status counts), and
    MLflow has a store for the URI; else a one-line ConfigError."""
    import urllib.error
    import urllib.request

    if uri and uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=MLFLOW_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # it answered
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(f"MLflow tracking URI {uri!r} is unreachable: {reason}") from None
        return
    try:
        _mlflow_client(uri).search_experiments(max_results=1)
    except ResflowError:
        raise
    except Exception as err:  # noqa: BLE001 - MLflow raises many types for a bad URI; one line says which
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConfigError(f"MLflow tracking URI {uri or '(default)'!r} cannot be used: {first}") from None


def check_spec(spec, default_name: str = "resflow") -> None:
    """Everything about `spec` that can be checked before a run starts (nothing is written but an
    MLflow store's own database)."""
    if hasattr(spec, "log"):
        return
    kind, target = parse_spec(spec)
    check_installed(kind, f"log_to {kind}")
    if kind == "wandb":
        check_wandb_project(target or default_name)
    elif kind == "mlflow":
        check_mlflow_uri(target)


def open_sink(spec, run: str | None, project: str, hparams: dict | None = None, config: dict | None = None, wall_time=None):
    """A sink for one tracker run. `run`: its name ('<variant>/seed_<n>'; TensorBoard: the sub-dir
    of LOGDIR, None: LOGDIR itself); `project`: the W&B project / MLflow experiment when the spec
    names none; `hparams`: the config columns (TensorBoard HParams, W&B config, MLflow params)."""
    if hasattr(spec, "log"):
        return spec
    kind, target = parse_spec(spec)
    check_installed(kind, f"log_to {kind}")
    if kind == "tensorboard":
        path = Path(target) / run if run else Path(target)
        return TensorBoardRun(path, hparams, config, wall_time=wall_time)
    if kind == "wandb":
        return WandbRun(target or project, run or project, hparams or {}, config)
    return MLflowRun(target, project, run or project, hparams or {}, config)


def flatten(config: dict | None, prefix: str = "") -> dict[str, Any]:
    """{'model': {'depth': 3}} -> {'model.depth': 3}: a config's keys as dotted names."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class WandbRun:
    """A W&B run: per-layer keys `input_grad_norm/layer_003` (W&B's workspace puts each quantity in
    its own section), one `wandb.plot.line_series` per quantity at close (every layer a line in one
    chart), the config columns and the config as the run config, the summary as the run summary."""

    kind = "wandb"

    def __init__(self, project: str, name: str, hparams: dict, config: dict | None):
        import wandb

        check_wandb_project(project)
        group = name.rsplit("/seed_", 1)[0] if "/seed_" in name else None
        try:
            self.run = wandb.init(
                project=project,
                name=name,
                group=group,
                config={**(config or {}), **hparams},
                reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
        except Exception as err:  # noqa: BLE001 - W&B's errors (no API key, no network) as one line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ResflowError(f"W&B could not start a run in project {project!r}: {first}") from None
        self.series: dict[str, dict[str, tuple[list, list]]] = {TAGS[m]: {} for m in MEASURES}
        self.scalars = self.histograms = 0

    def log(self, step: int, rows=(), scalars: dict | None = None, wall_time: float | None = None) -> None:
        data = layer_values(list(rows))
        for key, value in data.items():
            measure, tag = key.split("/", 1)
            xs, ys = self.series[measure].setdefault(tag, ([], []))
            xs.append(int(step))
            ys.append(value)
        data.update({k: float(v) for k, v in (scalars or {}).items() if not missing(v)})
        if data:
            self.run.log(data, step=int(step))
            self.scalars += len(data)

    def close(self, summary: dict | None = None) -> None:
        import wandb

        try:
            charts = {}
            for measure, lines in self.series.items():
                if lines:
                    tags = sorted(lines)
                    charts[f"per_layer/{measure}"] = wandb.plot.line_series(
                        xs=[lines[t][0] for t in tags], ys=[lines[t][1] for t in tags], keys=tags, title=measure, xname="step"
                    )
            if charts:
                self.run.log(charts)
            for key, value in (summary or {}).items():
                if not missing(value):
                    self.run.summary[key] = value
        finally:
            self.run.finish()


def _mlflow_client(uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(uri) if uri else MlflowClient()


class MLflowRun:
    """An MLflow run in experiment `experiment`: per-layer metrics `input_grad_norm/layer_003` with
    their step and wall time (MLflow's charts group them by prefix), the config's dotted keys and
    the config columns as params, the summary as metrics at the last step."""

    kind = "mlflow"
    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, uri: str | None, experiment: str, name: str, hparams: dict, config: dict | None):
        from mlflow.entities import Param

        self.client = _mlflow_client(uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        tags = {"resflow.variant": name.rsplit("/seed_", 1)[0]} if "/seed_" in name else {}
        self.run_id = self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id
        params = {**flatten(config), **hparams}
        items = [Param(str(k), str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):  # MLflow's limit of params per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self._step = 0
        self.scalars = self.histograms = 0

    def _metrics(self, values: dict, step: int, wall_time: float | None) -> None:
        from mlflow.entities import Metric

        stamp = int(1000 * (time.time() if wall_time is None else wall_time))
        items = [Metric(k, float(v), stamp, int(step)) for k, v in values.items() if math.isfinite(float(v))]
        for i in range(0, len(items), self.BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + self.BATCH])
        self.scalars += len(items)

    def log(self, step: int, rows=(), scalars: dict | None = None, wall_time: float | None = None) -> None:
        values = layer_values(list(rows))
        values.update({k: v for k, v in (scalars or {}).items() if not missing(v)})
        self._step = max(self._step, int(step))
        if values:
            self._metrics(values, step, wall_time)

    def close(self, summary: dict | None = None) -> None:
        try:
            values = {f"summary/{k}": v for k, v in (summary or {}).items() if k in METRICS and not missing(v)}
            if values:
                self._metrics(values, self._step, None)
        finally:
            self.client.set_terminated(self.run_id)


__all__ = ["Sink", "open_sink", "check_spec", "parse_spec", "as_specs", "layer_tag", "flatten", "KINDS"]


def check_log_to(log_to, tensorboard=None, default_name: str = "resflow") -> list:
    """`watch(log_to=..., tensorboard=...)`'s trackers as a checked list of specs (`tensorboard=LOGDIR`
    is `log_to="tensorboard:LOGDIR"`); a one-line ConfigError before anything runs."""
    specs = ([f"tensorboard:{tensorboard}"] if tensorboard is not None else []) + as_specs(log_to)
    for spec in specs:
        check_spec(spec, default_name)
    return specs


def summary_of(summary) -> dict[str, float]:
    """A summary table's last row's METRICS (a DataFrame or None): what `close` is given."""
    if summary is None or not len(summary):
        return {}
    last = summary.iloc[-1]
    return {m: float(last[m]) for m in METRICS if m in summary and not missing(float(last[m]))}


class Sinks:
    """Every tracker of a `log_to` list as one sink (what resflow.watch holds while it runs)."""

    def __init__(self, specs: list, run: str | None, project: str, hparams: dict | None = None, config: dict | None = None):
        self.sinks: list = []
        try:
            for spec in specs:
                self.sinks.append(open_sink(spec, run, project, hparams, config))
        except BaseException:
            self.close()
            raise

    def log(self, step: int, rows=(), scalars: dict | None = None, wall_time: float | None = None) -> None:
        rows = list(rows)
        for sink in self.sinks:
            sink.log(step, rows, scalars, wall_time)

    def log_hist(self, step: int, rows, wall_time: float | None = None) -> None:
        """One step's gradient histograms (hist.csv's rows), to each tracker that keeps histograms."""
        rows = list(rows)
        for sink in self.sinks:
            if hasattr(sink, "log_hist"):
                sink.log_hist(step, rows, wall_time)

    def close(self, summary: dict | None = None) -> None:
        while self.sinks:
            self.sinks.pop(0).close(summary)
