"""The model checks: build and forward through the framework's adapter, learning, recipes,
and a real run by the framework's trainer."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cifarfw.hookspecs import hookimpl
from cifarfw.metrics import REQUIRED as REQUIRED_METRICS
from cifarfw.plugins import PluginHost
from cifarfw.specs import ModelSpec
from cifarfw_authoring.kit.base import NUM_CLASSES, ContractError, PluginUnderTest


class FrameworkAdapter(Protocol):
    """What the kit needs to know about a framework to build, run and train a model.

    A trainer plugin declares its adapter with ``TrainerSpec(adapter=...)``.
    ``images`` are float32, normalised, (N, H, W, C); ``labels`` int64 (N,).
    """

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> Any: ...

    def forward(self, model: Any, images: np.ndarray) -> np.ndarray: ...

    def count_params(self, model: Any) -> tuple[int, int]: ...

    def loss_before_after(
        self, model: Any, images: np.ndarray, labels: np.ndarray, steps: int
    ) -> tuple[float, float]: ...


def _batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images at the model's input size, normalised with its mean/std."""
    from cifarfw.data import synthetic

    split = synthetic.generate(n, seed, size=spec.input_size)
    x = split.images.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.astype(np.float32), split.labels


def check_forward(adapter: FrameworkAdapter, spec: ModelSpec, options: Mapping[str, Any], batch: int = 4) -> Any:
    """Build the model and check a forward pass; return the built model."""
    try:
        model = adapter.build(spec, NUM_CLASSES, options)
    except ContractError:
        raise
    except Exception as err:
        raise ContractError(f"model {spec.name!r} does not build: {type(err).__name__}: {err}") from err
    x, _ = _batch(spec, batch)
    try:
        out = adapter.forward(model, x)
    except Exception as err:
        raise ContractError(
            f"model {spec.name!r}: a forward pass on a ({batch}, {spec.input_size}, {spec.input_size}, 3) batch "
            f"fails: {type(err).__name__}: {err}; is input_size right?"
        ) from err
    if tuple(out.shape) != (batch, NUM_CLASSES):
        raise ContractError(
            f"model {spec.name!r}: output shape {tuple(out.shape)}, expected (batch, num_classes) = "
            f"({batch}, {NUM_CLASSES}); the factory must honour num_classes"
        )
    if not np.all(np.isfinite(out)):
        raise ContractError(f"model {spec.name!r}: the forward pass gives non-finite outputs")
    return model


def check_learns(
    adapter: FrameworkAdapter, spec: ModelSpec, options: Mapping[str, Any], batch: int, steps: int
) -> None:
    model = adapter.build(spec, NUM_CLASSES, options)
    x, y = _batch(spec, batch, seed=1)
    before, after = adapter.loss_before_after(model, x, y, steps)
    if not (math.isfinite(before) and math.isfinite(after)):
        raise ContractError(f"model {spec.name!r}: the loss is not finite ({before} -> {after})")
    if not after < before:
        raise ContractError(
            f"model {spec.name!r}: {steps} Adam steps (lr 0.001) on a fixed batch of {batch} did not lower the loss "
            f"({before:.4f} -> {after:.4f}); are the trainable parameters connected to the output?"
        )


def check_params(
    adapter: FrameworkAdapter, model: Any, spec: ModelSpec, expected: Mapping[str, int] | None
) -> tuple[int, int]:
    """The model's (total, trainable) parameter counts; checked against ``expected`` when given."""
    total, trainable = adapter.count_params(model)
    if expected is not None:
        want = (expected.get("total", total), expected.get("trainable", trainable))
        if (total, trainable) != want:
            raise ContractError(
                f"model {spec.name!r} has {total:,} parameters ({trainable:,} trainable), expected "
                f"{want[0]:,} ({want[1]:,} trainable)"
            )
    return total, trainable


# --- recipes and a real run ------------------------------------------------------------------


def check_recipes(put: PluginUnderTest, spec: ModelSpec, options: Mapping[str, Any] | None = None) -> list[str]:
    """Resolve every recipe of ``spec`` as ``cifarfw run --recipe R`` would; return their names."""
    from cifarfw import runner
    from cifarfw.errors import CifarfwError

    for recipe in spec.recipes:
        flags: dict[str, Any] = {"recipe": recipe}
        if options:
            flags["model_options"] = dict(options)
        try:
            runner.resolve(put.host, put.name, spec.name, {}, flags)
        except CifarfwError as err:
            raise ContractError(f"model {spec.name!r}, recipe {recipe!r} does not resolve: {err}") from err
    return list(spec.recipes)


class _EventRecorder:
    """Listens to every event of a run, to check the order and content trainers emit."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        self.events.append(("on_run_start", {}))

    @hookimpl
    def on_model_built(self, run: Any, params: dict[str, int], summary: str, graph: Any) -> None:
        self.events.append(("on_model_built", {"params": dict(params), "summary": summary}))

    @hookimpl
    def on_train_progress(self, run: Any, epoch: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        self.events.append(("on_train_progress", {"epoch": epoch, "step": step, "steps": steps}))

    @hookimpl
    def on_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append(("on_epoch_end", {"epoch": epoch, "metrics": dict(metrics)}))

    @hookimpl
    def on_predictions(self, run: Any, epoch: int, labels: Any, predictions: Any, images: Any) -> None:
        self.events.append(
            ("on_predictions", {"epoch": epoch, "labels": labels, "predictions": predictions, "images": images})
        )

    @hookimpl
    def on_checkpoint(self, run: Any, epoch: int, path: str) -> None:
        self.events.append(("on_checkpoint", {"epoch": epoch, "path": path}))

    @hookimpl
    def on_run_end(self, run: Any, status: str, result: Any) -> None:
        self.events.append(("on_run_end", {"status": status}))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kw for event, kw in self.events if event == name]


@contextmanager
def root_folder(path: str | os.PathLike | None) -> Iterator[Path]:
    """``path``, or a temporary folder removed afterwards."""
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="cifarfw-contract-") as tmp:
        yield Path(tmp)


def synthetic_run(
    host: PluginHost, plugin: str, spec: ModelSpec, root: Path, flags: Mapping[str, Any], listener: object = None
) -> Path:
    """One run of ``spec`` on a tiny synthetic dataset, through :mod:`cifarfw.runner` as
    ``cifarfw run`` does, with ``listener`` registered for its events; its run folder.
    ``flags`` add to (or override) the kit's small settings."""
    from cifarfw import runner
    from cifarfw.errors import CifarfwError

    settings = {"dataset": "synthetic", "dataset_options": {"train_size": 60, "test_size": 30}, "epochs": 1,
                "batch_size": 16, "device": "cpu", "compile": False, "prediction_samples": 4, "name": "contract",
                "runs_root": str(root), **flags}  # fmt: skip
    try:
        plugin, resolved, config = runner.resolve(host, plugin, spec.name, {}, settings)
    except CifarfwError as err:
        raise ContractError(f"model {spec.name!r}: a run on synthetic data does not resolve: {err}") from err
    if listener is not None:
        host.pm.register(listener, name=f"contract-listener-{id(listener)}")
    try:
        return runner.execute(host, plugin, resolved, config)
    finally:
        if listener is not None:
            host.pm.unregister(listener)


def check_trainer_run(
    put: PluginUnderTest,
    spec: ModelSpec,
    options: Mapping[str, Any] | None = None,
    runs_root: str | os.PathLike | None = None,
    *,
    epochs: int = 1,
    train_size: int = 60,
    test_size: int = 30,
    batch_size: int = 16,
    expected_total_params: int | None = None,
) -> dict[str, Any]:
    """Train ``spec`` with its framework's registered trainer through :mod:`cifarfw.runner`
    on a tiny synthetic dataset; check the events and run.json; return run.json."""
    from cifarfw.errors import CifarfwError

    flags: dict[str, Any] = {"dataset_options": {"train_size": train_size, "test_size": test_size}, "epochs": epochs,
                             "batch_size": batch_size}  # fmt: skip
    if options:
        flags["model_options"] = dict(options)
    recorder = _EventRecorder()
    with root_folder(runs_root) as root:
        try:
            run_dir = synthetic_run(put.host, put.name, spec, root, flags, recorder)
        except CifarfwError as err:
            raise ContractError(f"model {spec.name!r}: the {spec.framework} trainer failed: {err}") from err
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        _check_events(recorder, epochs, test_size)
        _check_record(record, epochs, expected_total_params)
        if not (run_dir / "predictions.npz").is_file():
            raise ContractError("the run wrote no predictions.npz: the trainer must emit on_predictions at the end")
    return record


def _check_events(rec: _EventRecorder, epochs: int, test_size: int) -> None:
    names = [name for name, _ in rec.events]
    built = rec.of("on_model_built")
    if len(built) != 1:
        raise ContractError(f"the trainer emitted on_model_built {len(built)} times; emit it once, after building")
    ends = rec.of("on_epoch_end")
    if [e["epoch"] for e in ends] != list(range(1, epochs + 1)):
        raise ContractError(
            f"on_epoch_end epochs were {[e['epoch'] for e in ends]}, expected {list(range(1, epochs + 1))} (1-based)"
        )
    if names.index("on_model_built") > names.index("on_epoch_end"):
        raise ContractError("on_model_built must come before the first on_epoch_end")
    for progress in rec.of("on_train_progress"):
        if not (1 <= progress["step"] <= progress["steps"]) or not (1 <= progress["epoch"] <= epochs):
            raise ContractError(f"on_train_progress has step/steps/epoch out of range: {progress}")
    predictions = rec.of("on_predictions")
    if len(predictions) != 1:
        raise ContractError(f"the trainer emitted on_predictions {len(predictions)} times; emit it once, at the end")
    labels, preds, images = (np.asarray(predictions[0][k]) for k in ("labels", "predictions", "images"))
    if labels.shape != (test_size,) or preds.shape != (test_size,):
        raise ContractError(
            f"on_predictions: labels {labels.shape} and predictions {preds.shape} must cover the whole test set "
            f"({test_size},)"
        )
    if not np.issubdtype(preds.dtype, np.integer) or preds.min() < 0 or preds.max() >= NUM_CLASSES:
        raise ContractError("on_predictions: predictions must be class indices (ints in 0..num_classes-1)")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) > 4:
        raise ContractError(
            f"on_predictions: images must be the first prediction_samples test images, uint8 (N, H, W, 3); got "
            f"{images.dtype} {images.shape}"
        )
    for ckpt in rec.of("on_checkpoint"):
        if not Path(ckpt["path"]).exists():
            raise ContractError(f"on_checkpoint names {ckpt['path']}, which does not exist")


def _check_record(record: Mapping[str, Any], epochs: int, expected_total: int | None) -> None:
    if record.get("status") != "finished":
        raise ContractError(f"run.json status is {record.get('status')!r}: {record.get('error', '')}")
    params = record.get("params") or {}
    total, trainable = params.get("total"), params.get("trainable")
    if not isinstance(total, int) or not isinstance(trainable, int) or not 0 < trainable <= total:
        raise ContractError(
            f"run.json params are {params}; emit on_model_built(params={{'total': n, 'trainable': m}}) with 0 < m <= n"
        )
    if expected_total is not None and total != expected_total:
        raise ContractError(f"run.json reports {total:,} parameters; the model has {expected_total:,}")
    entries = record.get("epochs") or []
    if len(entries) != epochs:
        raise ContractError(f"run.json has {len(entries)} epochs, expected {epochs}")
    for entry in entries:
        missing = [m for m in REQUIRED_METRICS if m not in entry]
        if missing:
            raise ContractError(f"epoch {entry.get('epoch')} lacks metrics {', '.join(missing)} (on_epoch_end)")
        bad = [m for m in REQUIRED_METRICS if not math.isfinite(entry[m])]
        if bad:
            raise ContractError(f"epoch {entry['epoch']}: non-finite {', '.join(bad)}")
        for acc in ("train_acc", "test_acc"):
            if not 0 <= entry[acc] <= 1:
                raise ContractError(f"epoch {entry['epoch']}: {acc} = {entry[acc]}; accuracies are fractions 0-1")
    final = record.get("final") or {}
    if "train_seconds" not in final or any(m not in final for m in ("train_loss", "test_acc")):
        raise ContractError("run.json has no final metrics: fit() must return RunResult(final=..., train_seconds=...)")
