"""TensorBoard event writing, shared by `resflow export --to tensorboard` and `resflow.watch(...,
tensorboard=LOGDIR)`: the writer, a scalar, an event, the per-layer tag names, and one recorded
step's per-layer scalars. TensorBoard's own writer and protos (the `tensorboard` package alone: no
TensorFlow, no torch, no pandas); the package is imported only when a writer is made.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from resflow.errors import ResflowError

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


def write_train_steps(writer, steps: list[int], columns: dict[str, list]) -> int:
    """Append each step's training scalars (`columns`: tag -> one value per step, e.g. loss and
    grad_norm_total; NaN left out) as one event per step, then flush: the number of scalars written."""
    count, now = 0, time.time()
    for i, step in enumerate(steps):
        values = [scalar(tag, column[i]) for tag, column in columns.items() if not _missing(column[i])]
        if values:
            event(writer, step, values, now)
            count += len(values)
    if count:
        writer.flush()
    return count
