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


# ---------------------------------------------------------------------------------------------
# Whole event files at once (`resflow export`): TensorBoard's record format, checksums vectorised


def _crc_table():
    """CRC-32C's (Castagnoli, reflected polynomial 0x82F63B78) byte table."""
    import numpy as np

    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


def masked_crc32c(blobs: list[bytes]):
    """TFRecord's masked CRC-32C of each blob (a uint32 array), computed for all blobs at once: the
    blobs are the columns of one byte matrix, processed a byte position at a time, so the cost is
    numpy's per position, not Python's per byte (TensorBoard's own writer checksums in pure Python:
    ~0.2 µs a byte, most of an export's time)."""
    import numpy as np

    table = _crc_table()
    lengths = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    order = np.argsort(-lengths, kind="stable")  # longest first: position j updates a prefix of them
    width = int(lengths.max()) if len(blobs) else 0
    data = np.zeros((width, len(blobs)), dtype=np.uint8)
    for column, i in enumerate(order):
        data[: lengths[i], column] = np.frombuffer(blobs[i], dtype=np.uint8)
    active = len(blobs) - np.searchsorted(np.sort(lengths), np.arange(width), side="right")  # blobs longer than j
    crc = np.full(len(blobs), 0xFFFFFFFF, dtype=np.uint32)
    for j in range(width):
        n = active[j]
        c = crc[:n]
        crc[:n] = table[(c ^ data[j, :n]) & 0xFF] ^ (c >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)  # (uint32: wraps as the format says)
    out = np.empty_like(masked)
    out[order] = masked
    return out


def write_event_file(directory: Path, events: list) -> Path:
    """Write `events` (Event protos, in order) as one new TensorBoard event file in `directory`
    (created), named and begun as TensorBoard's own writer does (a file_version event first)."""
    import os
    import socket
    import struct

    from tensorboard.compat.proto import event_pb2

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResflowError(f"cannot create the TensorBoard logdir {str(directory)!r}: {err.strerror or err}") from None
    first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    data = [e.SerializeToString() for e in (first, *events)]
    heads = [struct.pack("<Q", len(d)) for d in data]
    head_crcs, data_crcs = masked_crc32c(heads), masked_crc32c(data)
    token = os.urandom(4).hex()  # (two exports in one second of one process: two names)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{token}.resflow"
    path = directory / name
    with open(path, "xb") as fh:
        for head, hc, d, dc in zip(heads, head_crcs.tolist(), data, data_crcs.tolist()):
            fh.write(head + struct.pack("<I", hc) + d + struct.pack("<I", dc))
    return path


def make_event(step: int, values, wall_time: float):
    """An Event proto of one step's summary values."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2.Event(wall_time=wall_time, step=int(step), summary=summary_pb2.Summary(value=values))


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
