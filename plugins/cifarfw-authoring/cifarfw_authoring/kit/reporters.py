"""The reporter check: a reporter plugin receives the events of a small real run.

The run needs no deep-learning framework: the kit brings its own numpy trainer (softmax
regression on 8x8 pixels, trained by plain SGD) and model, and the built-in synthetic
dataset, so a reporter is checked the same way wherever its tests run.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cifarfw import hookspecs
from cifarfw.hookspecs import hookimpl
from cifarfw.runs import Run, atomic_write
from cifarfw.specs import ModelSpec, ReporterSpec, RunResult, TrainerSpec
from cifarfw_authoring.kit.base import ContractError, PluginUnderTest
from cifarfw_authoring.kit.models import root_folder, synthetic_run

KIT_PLUGIN = "cifarfw-kit-numpy"  # the name of the kit's own numpy plugin in the host
EVENT_HOOKS = tuple(n for n in dir(hookspecs) if n.startswith("on_") and n != "on_session_end")


class NumpyTrainer:
    """Softmax regression by full-batch SGD: real metrics, a checkpoint, predictions."""

    def fit(self, run: Run) -> RunResult:
        cfg, ds = run.config, run.dataset

        def features(images: np.ndarray) -> np.ndarray:
            return images[:, ::4, ::4, :].reshape(len(images), -1) / 255.0 - 0.5

        def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
            z = x @ w
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean()), float((p.argmax(1) == y).mean()), p

        (xtr, ytr), (xte, yte) = (
            (features(ds.train.images), ds.train.labels),
            (features(ds.test.images), ds.test.labels),
        )
        w = run.model.factory(num_classes=ds.num_classes, options=cfg.model_options)
        run.emit("on_model_built", params={"total": w.size, "trainable": w.size}, summary="softmax", graph=None)
        start, metrics = time.perf_counter(), {}
        for epoch in range(1, cfg.epochs + 1):
            began = time.perf_counter()
            _, _, p = evaluate(xtr, ytr)
            p[np.arange(len(ytr)), ytr] -= 1
            w -= cfg.lr * xtr.T @ p / len(ytr)
            train_loss, train_acc, _ = evaluate(xtr, ytr)
            run.emit("on_train_progress", epoch=epoch, step=1, steps=1, metrics={"train_loss": train_loss})
            test_loss, test_acc, _ = evaluate(xte, yte)
            metrics = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
                       "lr": cfg.lr, "seconds": time.perf_counter() - began}  # fmt: skip
            run.emit("on_epoch_end", epoch=epoch, metrics=metrics)
            path = run.checkpoint_dir / f"epoch{epoch}.npy"
            atomic_write(path, w.tobytes())
            run.emit("on_checkpoint", epoch=epoch, path=str(path))
        predictions = evaluate(xte, yte)[2].argmax(1)
        images = ds.test.images[: cfg.prediction_samples]
        run.emit("on_predictions", epoch=cfg.epochs, labels=yte, predictions=predictions, images=images)
        return RunResult(final=metrics, train_seconds=time.perf_counter() - start)


class NumpyPlugin:
    """The kit's trainer (framework ``kit-numpy``) and model (``kit-softmax``)."""

    model = ModelSpec("kit-softmax", "kit-numpy", lambda num_classes, options: np.zeros((192, num_classes)))

    @hookimpl
    def register_trainers(self, register: Callable[[TrainerSpec], None]) -> None:
        register(TrainerSpec("kit-numpy", "kit-numpy", NumpyTrainer, description="the test kit's numpy trainer"))

    @hookimpl
    def register_models(self, register: Callable[[ModelSpec], None]) -> None:
        register(self.model)


def _spied(reporter: object, calls: list[tuple[str, dict[str, Any]]]) -> object:
    """``reporter`` with each event hook method wrapped to note its call (and what it raised)."""
    for hook in EVENT_HOOKS:
        method = getattr(reporter, hook, None)
        if method is None or not hasattr(method, f"{hookspecs.PROJECT}_impl"):
            continue
        names = list(inspect.signature(method).parameters)

        @functools.wraps(method)  # keeps the hookimpl marker and the argument names pluggy reads
        def spy(*args: Any, _hook: str = hook, _method: Any = method, _names: list[str] = names) -> Any:
            calls.append((_hook, dict(zip(_names, args, strict=False))))
            try:
                return _method(*args)
            except Exception as err:
                calls.append(("raised", {"hook": _hook, "error": f"{type(err).__name__}: {err}"}))
                raise

        try:
            setattr(reporter, hook, spy)
        except (AttributeError, TypeError) as err:
            raise ContractError(
                f"the reporter's {hook} cannot be observed ({err}); factory(run) must return a new object per run"
            ) from None
    return reporter


def check_reporter_run(
    put: PluginUnderTest, spec: ReporterSpec, runs_root: str | os.PathLike | None = None, *, epochs: int = 2
) -> list[str]:
    """Feed reporter ``spec`` the events of a small real run (the kit's numpy trainer on the
    synthetic dataset): it must receive on_run_start, every on_epoch_end in order and
    on_run_end, and raise nothing. Returns the events it received."""
    calls: list[tuple[str, dict[str, Any]]] = []
    put.host.reporters[spec.name] = replace(spec, factory=lambda run: _spied(spec.factory(run), calls))
    with root_folder(runs_root) as root:
        failure = ""
        try:
            run_dir = synthetic_run(put.host, KIT_PLUGIN, NumpyPlugin.model, root, {"epochs": epochs, "lr": 0.5,
                                    "reporters": [spec.name]})  # fmt: skip
        except Exception as err:  # the reporter's own error is re-raised by the runner
            failure = f"{type(err).__name__}: {err}"
        finally:
            put.host.reporters[spec.name] = spec
        raised = [kw for hook, kw in calls if hook == "raised"]
        if raised:
            raise ContractError(f"reporter {spec.name!r} raised in {raised[0]['hook']}: {raised[0]['error']}")
        if failure:
            raise ContractError(f"reporter {spec.name!r}: the run failed: {failure}")
        status = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8")).get("status")
    received = [hook for hook, _ in calls]
    if not received:
        raise ContractError(
            f"reporter {spec.name!r} received no event: decorate its methods with @cifarfw.hookimpl and name them "
            f"after the event hooks ({', '.join(EVENT_HOOKS)})"
        )
    for hook, where in (("on_run_start", 0), ("on_run_end", -1)):
        if hook in received and (received.count(hook) != 1 or received[where] != hook):
            raise ContractError(f"reporter {spec.name!r} received {hook} {received.count(hook)} times, out of order")
    epochs_seen = [kw.get("epoch") for hook, kw in calls if hook == "on_epoch_end"]
    if "on_epoch_end" in received and epochs_seen != list(range(1, epochs + 1)):
        raise ContractError(f"reporter {spec.name!r} received on_epoch_end for epochs {epochs_seen}")
    if status != "finished":
        raise ContractError(f"reporter {spec.name!r}: the run ended {status!r}")
    return received
