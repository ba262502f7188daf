"""TensorBoard event files from a results dir (`resflow export DIR --to tensorboard [LOGDIR]`).

Written with TensorBoard's own event writer and protos (the `tensorboard` package alone: no
TensorFlow, no torch). One run per variant and seed, `LOGDIR/<variant>/seed_<n>/`, holding:

  input_grad_norm/layer_003[/attn]   scalars over training steps (one point at step 0 when measured at init)
  param_grad_norm/..., activation_rms/...
  profile/input_grad_norm            the depth profile at the last step: x (TensorBoard's "step") = site index
  log10_input_grad_norm              histogram per step: log10 of every layer's gradient norm
  loss, eval_loss, grad_norm_total, lr   training runs: over steps
  summary/grad_ratio, ...            the run's summary.csv values (the hparams view's metrics)
  config                             the run's config, as text; and the hparams view's session

TensorBoard keeps scalars as float32: a value below ~1e-45 shows as 0, one above ~3e38 as inf.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from resflow.report.export.runs import LOSSES, MEASURES, METRICS, Exported, layer_tags, runs
from resflow.results.tensorboard_events import make_event, write_event_file
from resflow.results.tensorboard_events import scalar as _scalar


def _histogram(tag: str, values: np.ndarray, bins: int = 30):
    from tensorboard.compat.proto import summary_pb2

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


def _text(tag: str, text: str):
    """A text-plugin summary (a string tensor), built from the protos: the plugin's own `pb` needs TensorFlow."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[text.encode()], tensor_shape=tensor_shape_pb2.TensorShapeProto()
    )
    return summary_pb2.Summary.Value(
        tag=tag, tensor=tensor, metadata=metadata.create_summary_metadata(display_name=None, description=None)
    )


def _hparams(hparams: dict):
    """The hparams plugin's session-start summary (what torch's add_hparams writes, without torch)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)) and math.isfinite(value):
            info.hparams[key].number_value = float(value)
        else:
            info.hparams[key].string_value = str(value)
    start = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_start_info=info))
    end = metadata.create_summary_metadata(
        plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS))
    )
    return (
        summary_pb2.Summary.Value(tag=metadata.SESSION_START_INFO_TAG, metadata=start),
        summary_pb2.Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=end),
    )


def _step_groups(steps: np.ndarray):
    """(step, row indices) per distinct step, in step order (one stable sort, not a filter per step)."""
    order = np.argsort(steps, kind="stable")
    uniq, starts = np.unique(steps[order], return_index=True)
    bounds = [*starts[1:], len(order)]
    return [(int(step), order[a:b]) for step, a, b in zip(uniq, starts, bounds)]


def export(result, logdir: Path, mark=None) -> Exported:
    """Write one run per variant and seed into `logdir`; `mark(name)` is told each run's name before
    its directory is made (resflow.report.export records what it wrote, for --force). Each run's
    rows are grouped once by step, and its event file is written whole (write_event_file)."""
    from tensorboard.compat.proto import summary_pb2

    value_of = summary_pb2.Summary.Value
    done = Exported(Path(logdir))
    wall = time.time()
    for run in runs(result):
        events = []

        def add(step, values):
            events.append(make_event(step, values, wall))

        start, end = _hparams(run.hparams)
        config_text = "```\n" + json.dumps(run.config, indent=2, default=str) + "\n```"
        add(0, [start, _text("config", config_text)])
        g = run.grads
        tags = layer_tags(g)
        columns = [(c, g[c].to_numpy(dtype=float)) for c in MEASURES if c in g and not g[c].isna().all()]
        names = {c: np.array([f"{c}/{t}" for t in tags.tolist()], dtype=object) for c, _ in columns}
        norms = g["input_grad_norm"].to_numpy(dtype=float)
        groups = _step_groups(g["step"].to_numpy())
        for step, rows in groups:  # one event per step: every layer's scalars, and the histogram
            values = [
                value_of(tag=tag, simple_value=v)
                for column, array in columns
                for tag, v in zip(names[column][rows].tolist(), array[rows].tolist())
                if v == v  # not NaN
            ]
            done.scalars += len(values)
            step_norms = norms[rows]
            logs = np.log10(step_norms[np.isfinite(step_norms) & (step_norms > 0)])
            if len(logs):
                values.append(_histogram("log10_input_grad_norm", logs))
                done.histograms += 1
            add(step, values)
        last_step, last_rows = groups[-1]
        for site, value in enumerate(norms[last_rows].tolist()):  # the depth profile at the last step
            add(site, [_scalar("profile/input_grad_norm", value)])
            done.scalars += 1
        if run.train is not None and len(run.train):
            for column in LOSSES:
                if column in run.train and not run.train[column].isna().all():
                    for step, value in zip(run.train["step"].tolist(), run.train[column].tolist()):
                        if value == value:  # not NaN (eval_loss only on eval steps)
                            add(int(step), [_scalar(column, value)])
                            done.scalars += 1
        for column in METRICS:
            if column in run.summary and len(run.summary):
                add(last_step, [_scalar(f"summary/{column}", float(run.summary[column].iloc[-1]))])
                done.scalars += 1
        add(last_step, [end])
        if mark is not None:
            mark(run.name)
        write_event_file(Path(logdir) / run.name, events)
        done.runs.append(run.name)
    return done
