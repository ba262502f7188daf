"""TensorBoard event writing, one scheme for `resflow export --to tensorboard`, `run --tensorboard`
and `resflow.watch(..., log_to="tensorboard:LOGDIR")`: the tags, the summaries and `TensorBoardRun`,
the sink that writes one run's event file. TensorBoard's own writer and protos (the `tensorboard`
package alone: no TensorFlow, no torch, no pandas); the package is imported only when used.

A run's event file holds (tags exactly as docs/tools.md lists them):

  input_grad_norm/layer_003[/attn]   per recorded step (each logged quantity of resflow.quantities alike)
  log10_input_grad_norm              histogram per recorded step: log10 of every site's gradient norm
  loss, eval_loss, grad_norm_total, lr   training: per step
  profile/log10_input_grad_norm      at close: the last recorded step's depth profile, x = site index
  summary/grad_ratio, ...            at close: the run's summary (the HParams tab's declared metrics)
  config (text), HParams session and experiment, the custom-scalars layout (all layers in one chart)

TensorBoard keeps scalars as float32: a value below ~1e-45 shows as 0, one above ~3e38 as inf.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from resflow import quantities
from resflow.errors import ConfigError, ResflowError

# grads.csv columns written per layer: the registry's logged quantities (resflow.quantities), under their tags
MEASURES = tuple(quantities.logged())
TAGS = {name: quantities.GRADS[name].tag for name in MEASURES}
STEP_SCALARS = ("loss", "eval_loss", "grad_norm_total", "lr")  # train.csv columns written per step
METRICS = ("grad_ratio", "log10_grad_ratio", "gain_per_layer")  # summary.csv columns: the HParams metrics
SINGLE_SITE = ("", "mlp", "conv", "block")  # a layer's only site: no sub-layer part in its tag
HISTOGRAM = "log10_input_grad_norm"
PROFILE = "profile/log10_input_grad_norm"


def writer(path: Path):
    """A TensorBoard event file writer in `path` (created); a one-line ResflowError without the package."""
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ResflowError('TensorBoard is not installed: pip install "resflow[tensorboard]"') from None
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResflowError(f"cannot create the TensorBoard logdir {str(path)!r}: {err.strerror or err}") from None
    return EventFileWriter(str(path))


def event(writer, step: int, values, wall_time: float) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    writer.add_event(event_pb2.Event(wall_time=wall_time, step=int(step), summary=summary_pb2.Summary(value=values)))


def scalar(tag: str, value: float):
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))


def histogram(tag: str, values: list[float], bins: int = 30):
    import numpy as np
    from tensorboard.compat.proto import summary_pb2

    values = np.asarray(values, dtype=float)
    counts, edges = np.histogram(values, bins=bins)
    histo = summary_pb2.HistogramProto(
        min=float(values.min()),
        max=float(values.max()),
        num=float(len(values)),
        sum=float(values.sum()),
        sum_squares=float((values**2).sum()),
        bucket_limit=[float(e) for e in edges[1:]],
        bucket=[float(c) for c in counts],
    )
    return summary_pb2.Summary.Value(tag=tag, histo=histo)


def bins_histogram(tag: str, lo: list[float], hi: list[float], counts: list[int]):
    """A histogram summary from counted bins (hist.csv's rows of one parameter); the sums from the bins' centres."""
    from tensorboard.compat.proto import summary_pb2

    centres = [(a + b) / 2 for a, b in zip(lo, hi)]
    histo = summary_pb2.HistogramProto(
        min=float(lo[0]),
        max=float(hi[-1]),
        num=float(sum(counts)),
        sum=float(sum(c * x for c, x in zip(counts, centres))),
        sum_squares=float(sum(c * x * x for c, x in zip(counts, centres))),
        bucket_limit=[float(v) for v in hi],
        bucket=[float(c) for c in counts],
    )
    return summary_pb2.Summary.Value(tag=tag, histo=histo)


HIST_TAGS = [q.tag for q in quantities.HIST.values()]  # the histogram quantities' tag prefixes


def hist_values(rows: list[dict]) -> dict[str, tuple[list, list, list]]:
    """`<tag>/layer_003/<param>` -> (bin_lo, bin_hi, count) for one step's hist.csv rows."""
    out: dict[str, tuple[list, list, list]] = {}
    for row in rows:
        tag = f"{HIST_TAGS[0]}/layer_{int(row['layer']):03d}/{row['param']}"
        lo, hi, counts = out.setdefault(tag, ([], [], []))
        lo.append(float(row["bin_lo"]))
        hi.append(float(row["bin_hi"]))
        counts.append(int(row["count"]))
    return out


def _string_tensor(data: bytes):
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[data], tensor_shape=tensor_shape_pb2.TensorShapeProto())


def text(tag: str, body: str):
    """A text-plugin summary (a string tensor), built from the protos: the plugin's own `pb` needs TensorFlow."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.text import metadata

    meta = metadata.create_summary_metadata(display_name=None, description=None)
    return summary_pb2.Summary.Value(tag=tag, tensor=_string_tensor(body.encode()), metadata=meta)


def layout():
    """The custom-scalars layout: one chart per measure overlaying every layer (a tag regex, so it
    holds for any depth), and the losses in one chart."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    def chart(title, regex):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))

    per_layer = layout_pb2.Category(
        title="all layers, one chart per quantity", chart=[chart(TAGS[m], rf"^{TAGS[m]}/layer_") for m in MEASURES]
    )
    training = layout_pb2.Category(title="training", chart=[chart("loss, eval_loss", r"^(eval_)?loss$")])
    data = layout_pb2.Layout(category=[per_layer, training]).SerializeToString()
    return summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, tensor=_string_tensor(data), metadata=metadata.create_summary_metadata()
    )


def _hparams_value(tag: str, **data):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    )


def hparams_start(hparams: dict, wall_time: float) -> list:
    """The HParams plugin's experiment (hyperparameters = `hparams`' keys, metrics = the declared
    summary/<METRICS> alone) and this run's session start; what torch's add_hparams writes, without torch."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=wall_time)
    hparam_infos = []
    for key, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
            kind = api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, (int, float)) and math.isfinite(value):
            info.hparams[key].number_value = float(value)
            kind = api_pb2.DATA_TYPE_FLOAT64
        else:
            info.hparams[key].string_value = str(value)
            kind = api_pb2.DATA_TYPE_STRING
        hparam_infos.append(api_pb2.HParamInfo(name=key, type=kind))
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"summary/{m}"), display_name=m) for m in METRICS]
    experiment = api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metric_infos, time_created_secs=wall_time)
    return [
        _hparams_value(metadata.EXPERIMENT_TAG, experiment=experiment),
        _hparams_value(metadata.SESSION_START_INFO_TAG, session_start_info=info),
    ]


def hparams_end(wall_time: float):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=wall_time)
    return _hparams_value(metadata.SESSION_END_INFO_TAG, session_end_info=end)


def layer_tag(row) -> str:
    """layer_003, or layer_003/attn for a transformer's sub-layer: sorts in layer order in every tracker."""
    sub = row.get("sublayer") if hasattr(row, "get") else None
    sub = "" if sub is None or (isinstance(sub, float) and math.isnan(sub)) or sub in SINGLE_SITE else f"/{sub}"
    return f"layer_{int(row['layer']):03d}{sub}"


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def layer_values(rows: list[dict]) -> dict[str, float]:
    """`<measure>/<layer tag>` -> value for one step's per-site rows (a NaN left out): the per-layer
    keys every tracker logs."""
    return {
        f"{TAGS[column]}/{layer_tag(row)}": float(row[column])
        for column in MEASURES
        for row in rows
        if column in row and not missing(row[column])
    }


def log10_norms(rows: list[dict]) -> list[float]:
    """log10 of each site's input gradient norm (sites with none or a zero left out)."""
    out = []
    for row in rows:
        value = row.get("input_grad_norm")
        if not missing(value) and value > 0 and math.isfinite(value):
            out.append(math.log10(value))
    return out


class TensorBoardRun:
    """One run's event file, written as the run goes (the live sink) or replayed from a results dir
    (the exporter): the same events either way. `log` per step, `close` once with the summary."""

    kind = "tensorboard"

    def __init__(self, path: Path, hparams: dict | None = None, config: dict | None = None, wall_time: float | None = None):
        self.path = Path(path)
        self._writer = writer(self.path)
        self.scalars = self.histograms = 0
        self._last: tuple[int, list[dict]] | None = None  # the last recorded step's rows: the profile
        self._step = 0
        wall = time.time() if wall_time is None else wall_time
        values = [layout(), *hparams_start(dict(hparams or {}), wall)]
        if config is not None:
            values.append(text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```"))
        event(self._writer, 0, values, wall)

    def log(self, step: int, rows=(), scalars: dict | None = None, wall_time: float | None = None) -> None:
        """One step: the per-layer scalars of `rows` (a recorded step's sites), their log10 histogram,
        and the named `scalars` (loss, eval_loss, grad_norm_total, lr; a None or NaN left out)."""
        rows = list(rows)
        values = [scalar(tag, v) for tag, v in layer_values(rows).items()]
        values += [scalar(k, v) for k, v in (scalars or {}).items() if not missing(v)]
        self.scalars += len(values)
        logs = log10_norms(rows)
        if logs:
            values.append(histogram(HISTOGRAM, logs))
            self.histograms += 1
        if rows:
            self._last = (step, rows)
        self._step = max(self._step, int(step))
        if values:
            event(self._writer, step, values, time.time() if wall_time is None else wall_time)
            self._writer.flush()

    def log_hist(self, step: int, rows, wall_time: float | None = None) -> None:
        """One step's gradient histograms (hist.csv's rows: per parameter, its bins)."""
        values = [bins_histogram(tag, *bins) for tag, bins in hist_values(list(rows)).items()]
        if values:
            self.histograms += len(values)
            event(self._writer, step, values, time.time() if wall_time is None else wall_time)
            self._writer.flush()

    def close(self, summary: dict | None = None, wall_time: float | None = None) -> None:
        """The depth profile (log10, x = site index) of the last recorded step, the summary's metrics
        (summary/<name>) and the HParams session's end; then the file is closed."""
        wall = time.time() if wall_time is None else wall_time
        try:
            if self._last is not None:
                _, rows = self._last
                for site, row in enumerate(rows):
                    value = row.get("input_grad_norm")
                    if not missing(value) and value > 0:
                        event(self._writer, site, [scalar(PROFILE, math.log10(value))], wall)
                        self.scalars += 1
            metrics = [scalar(f"summary/{k}", v) for k, v in (summary or {}).items() if k in METRICS and not missing(v)]
            self.scalars += len(metrics)
            event(self._writer, self._step, [*metrics, hparams_end(wall)], wall)
        finally:
            self._writer.close()


EVENTS_PREFIX = "events.out.tfevents."


def check_run_logdir(path: Path, force: bool) -> None:
    """`run --tensorboard LOGDIR`: LOGDIR/<name> must not hold an earlier log of the run (a second
    events file would be appended to its curves), unless `force`, and then only resflow's own
    layout (seed_<n> dirs of event files) is replaced; never a symlink or anything else."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"--tensorboard: {str(path)!r} is not a directory; refusing to replace it (choose another LOGDIR)")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not force:
        raise ConfigError(
            f"--tensorboard: {str(path)!r} already holds a TensorBoard log of this run; pass --force to replace it, "
            "or choose another LOGDIR"
        )
    for entry in path.iterdir():
        own = entry.name.startswith("seed_") and entry.is_dir() and not entry.is_symlink()
        if not own or any(not (f.name.startswith(EVENTS_PREFIX) and f.is_file() and not f.is_symlink()) for f in entry.iterdir()):
            raise ConfigError(
                f"--tensorboard: {str(path)!r} holds {entry.name!r}, which is not a log resflow wrote; "
                "refusing to replace it (choose another LOGDIR)"
            )
