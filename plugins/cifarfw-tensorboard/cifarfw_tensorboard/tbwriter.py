"""TensorBoard event files without TensorFlow.

tensorboard's own EventFileWriter goes through ``tf.io.gfile`` and so imports
TensorFlow whenever it is installed (seconds of start-up, and a second framework in a
torch process). This writer uses tensorboard's record framing and protos directly.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class EventWriter:
    """Append-only writer of one ``events.out.tfevents.*`` file in ``logdir``."""

    def __init__(self, logdir: str | Path, suffix: str = ".cifarfw") -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{_pid()}{suffix}"
        self.path = self.logdir / name
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the writer's lifetime
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def _summary(self, step: int, value: summary_pb2.Summary.Value) -> None:
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        event.summary.value.append(value)
        self._write(event)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._summary(step, summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))

    def image(self, tag: str, png: bytes, height: int, width: int, step: int) -> None:
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        self._summary(step, summary_pb2.Summary.Value(tag=tag, image=image))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
        )
        metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
        self._summary(step, summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata))

    def summary_value(self, value: summary_pb2.Summary.Value, step: int = 0) -> None:
        """Write a prepared summary value (e.g. the HParams plugin's)."""
        self._summary(step, value)

    def graph(self, graph_def: Any) -> None:
        """Write a ``GraphDef`` proto (or its serialised bytes) for the Graphs dashboard."""
        data = graph_def if isinstance(graph_def, bytes) else graph_def.SerializeToString()
        self._write(event_pb2.Event(wall_time=time.time(), graph_def=data))

    def restart(self, step: int) -> None:
        """Mark a restart at ``step``: TensorBoard discards earlier events at or after it."""
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        event.session_log.status = event_pb2.SessionLog.START
        self._write(event)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def _pid() -> int:
    import os

    return os.getpid()
