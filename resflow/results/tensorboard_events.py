"""TensorBoard event writing, shared by `resflow export --to tensorboard` and `resflow.watch(...,
tensorboard=LOGDIR)`: the writer, a scalar, an event, the per-layer tag names, and one recorded
step's per-layer scalars. TensorBoard's own writer and protos (the `tensorboard` package alone: no
TensorFlow, no torch, no pandas); the package is imported only when a writer is made.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from resflow.errors import ConfigError, ResflowError

MEASURES = ("input_grad_norm", "param_grad_norm", "activation_rms")  # grads.csv columns written per layer


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


def layer_tag(row) -> str:
    """layer_003, or layer_003/attn for a transformer's sub-layer: sorts in layer order in every tracker."""
    sub = row.get("sublayer") if hasattr(row, "get") else None
    sub = "" if sub is None or (isinstance(sub, float) and math.isnan(sub)) or sub in ("", "mlp") else f"/{sub}"
    return f"layer_{int(row['layer']):03d}{sub}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def step_scalars(rows: list[dict], loss: float | None = None) -> list:
    """One step's scalars: `<measure>/<layer tag>` per grads row (a NaN left out, as the exporter
    does) and `loss` if given."""
    values = [
        scalar(f"{column}/{layer_tag(row)}", row[column])
        for column in MEASURES
        for row in rows
        if column in row and not _missing(row[column])
    ]
    if loss is not None and not _missing(loss):
        values.append(scalar("loss", loss))
    return values


def write_step(writer, step: int, rows: list[dict], loss: float | None = None) -> int:
    """Append one step's scalars (step_scalars) as one event and flush: the number of scalars written."""
    values = step_scalars(rows, loss)
    if values:
        event(writer, step, values, time.time())
        writer.flush()
    return len(values)


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
