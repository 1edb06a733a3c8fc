"""TensorBoard's HParams plugin data, written without TensorFlow.

Each run's event file gets a ``session_start_info`` (its hyperparameters; its group name
is the run's id, so a trial is named by its run id, whole) and, when it ends, a
``session_end_info`` (its status). One *experiment* summary names every hyperparameter
seen and the four shared metrics, so torch, keras and any other framework's runs appear
in one HParams table under the same metric names.

The experiment lives in one run folder (the newest run's), in a file of its own named to
sort before that run's events: TensorBoard reads it from whichever run holds it, and a
file at the top of the runs root would show up as a run named ``.`` in every selector.
The HParams dashboard shows five hyperparameters by default: the differing ones first, by
name (TensorBoard sorts them so). ``Model``, ``Plugin`` and ``Seed`` are capitalised
(capitals sort first) and always marked as differing, so they are three of the five.

The protos are built from tensorboard's ``plugin_data_pb2`` / ``api_pb2`` and
``metadata.create_summary_metadata``; ``tensorboard.plugins.hparams.summary`` is not
used because it imports TensorFlow.

TensorBoard keeps the first metadata it reads for a tag, so a live TensorBoard shows
a refreshed experiment only after a reload of the page's data (restart, or a new run of
``cifarfw tensorboard``); the per-run sessions appear as runs are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from cifarfw.metrics import tag_of
from cifarfw.report import augmentation_summary
from cifarfw.runs import atomic_write, iter_runs

# The shared metrics every session reports (tags written by TensorBoardReporter).
METRICS: tuple[tuple[str, str, int], ...] = (
    (tag_of("test_acc"), "test accuracy", api_pb2.DATASET_VALIDATION),
    (tag_of("train_acc"), "training accuracy", api_pb2.DATASET_TRAINING),
    (tag_of("test_loss"), "test loss", api_pb2.DATASET_VALIDATION),
    (tag_of("train_loss"), "training loss", api_pb2.DATASET_TRAINING),
)
EXPERIMENT_FILE_TAG = "cifarfw-hparams"  # part of the experiment event file's name
# Timestamp 0: the file sorts before the holder's own event files, so TensorBoard's directory
# watcher reads it first and then follows the run's live file.
EXPERIMENT_PREFIX = f"events.out.tfevents.0000000000.{EXPERIMENT_FILE_TAG}"
FIRST = ("Model", "Plugin", "Seed")  # shown by default in the HParams table (see above)

# Run status -> the HParams session status. "interrupted" writes no end, so a resumed run
# can still end as a success (TensorBoard keeps the first end it reads).
_END_STATUS = {
    "finished": api_pb2.STATUS_SUCCESS,
    "failed": api_pb2.STATUS_FAILURE,
    "nan": api_pb2.STATUS_FAILURE,
}


def hparams_of(record: Mapping[str, Any]) -> dict[str, str | float | bool]:
    """A run's hyperparameters, from its run record (run.json or the live ``run.record``)."""
    config = record.get("config") or {}
    resolved = record.get("resolved") or {}
    dataset = record.get("dataset")
    values: dict[str, Any] = {
        "Plugin": record.get("plugin") or config.get("plugin"),
        "Model": record.get("model") or config.get("model"),
        "framework": record.get("framework"),
        "recipe": record.get("recipe") or config.get("recipe"),
        "dataset": dataset.get("name") if isinstance(dataset, Mapping) else dataset or config.get("dataset"),
        "optimizer": config.get("optimizer"),
        "lr": config.get("lr"),
        "batch_size": config.get("batch_size"),
        "epochs": config.get("epochs"),
        "precision": resolved.get("precision") or config.get("precision"),
        "augmentation": resolved.get("augmentation") or augmentation_summary(config.get("augment")),
        "Seed": record.get("seed", config.get("seed")),
        "train_limit": config.get("train_limit"),  # 0: the whole split
        "test_limit": config.get("test_limit"),
    }
    for name, value in (config.get("model_options") or {}).items():
        values[f"option.{name}"] = value
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _value(value: Any) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=str(value))


def _data_type(value: Any) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, int | float):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _summary_value(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary.Value:
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )


def session_start(record: Mapping[str, Any], start_time: float | None = None) -> summary_pb2.Summary.Value:
    """The ``_hparams_/session_start_info`` summary of one run."""
    info = plugin_data_pb2.SessionStartInfo(
        start_time_secs=start_time if start_time is not None else time.time(), group_name=str(record.get("id") or "")
    )
    for name, value in hparams_of(record).items():
        info.hparams[name].CopyFrom(_value(value))
    return _summary_value(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end(status: str, end_time: float | None = None) -> summary_pb2.Summary.Value | None:
    """The ``_hparams_/session_end_info`` summary for a run ``status``; None when the run
    may still continue (interrupted, running)."""
    if status not in _END_STATUS:
        return None
    info = plugin_data_pb2.SessionEndInfo(
        status=_END_STATUS[status], end_time_secs=end_time if end_time is not None else time.time()
    )
    return _summary_value(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))


def experiment(runs_hparams: Iterable[Mapping[str, Any]]) -> api_pb2.Experiment:
    """The experiment: every hyperparameter seen (typed; a name seen with several types is a
    string; marked when its value differs between runs) and the four shared metrics. No
    domains, so a TensorBoard that has not reloaded it yet filters no new run out."""
    types: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    for hparams in runs_hparams:
        for name, value in hparams.items():
            kind = _data_type(value)
            types[name] = kind if types.get(name, kind) == kind else api_pb2.DATA_TYPE_STRING
            seen.setdefault(name, set()).add(repr(value))
    exp = api_pb2.Experiment(name="cifarfw", description="cifarfw runs under this runs root")
    for name in sorted(types):
        # "differs" puts the hparams that vary first in TensorBoard's table; model, plugin and
        # seed always count as differing, so they are among the five it shows by default.
        exp.hparam_infos.add(name=name, type=types[name], differs=name in FIRST or len(seen[name]) > 1)
    for tag, display, dataset_type in METRICS:
        exp.metric_infos.add(
            name=api_pb2.MetricName(group="", tag=tag), display_name=display, dataset_type=dataset_type
        )
    return exp


def write_experiment(
    runs_root: str | Path, extra: Iterable[Mapping[str, Any]] = (), holder: str | Path | None = None
) -> Path | None:
    """Write (or keep, when unchanged) the experiment summary of ``runs_root`` into one run
    folder: ``holder`` (the run starting), else the newest run. Built from every run record
    there plus ``extra`` hparams (a run whose record is not yet on disk); copies elsewhere
    (other runs, the top of the root as older versions wrote it) are removed, since
    TensorBoard takes the first it finds. Returns the file's path (None: no run to hold it)."""
    root = Path(runs_root)
    listed = list(iter_runs(root))
    everything = [hparams_of(record) for _, record in listed] + list(extra)
    target = Path(holder) if holder is not None else (listed[-1][0] if listed else None)
    stale = list(root.glob(f"events.out.tfevents.*.{EXPERIMENT_FILE_TAG}.*"))
    folders = {d for d, _ in listed} | ({target} if target is not None else set())
    stale += [p for d in folders for p in d.glob(f"{EXPERIMENT_PREFIX}.*")]
    path = None
    if target is not None:
        data = plugin_data_pb2.HParamsPluginData(experiment=experiment(everything))
        event = event_pb2.Event(wall_time=0.0, step=0)
        event.summary.value.append(_summary_value(metadata.EXPERIMENT_TAG, data))
        payload = event.SerializeToString()
        path = target / f"{EXPERIMENT_PREFIX}.{hashlib.sha1(payload).hexdigest()[:12]}"
        if not path.is_file():
            buffer = io.BytesIO()
            records = RecordWriter(buffer)
            records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            records.write(payload)
            atomic_write(path, buffer.getvalue())
    for old in stale:
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()
    return path
