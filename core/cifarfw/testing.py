"""The contract test kit: checks a model plugin against the cifarfw contract.

A plugin runs it against itself, in one line::

    from cifarfw.testing import check_model_plugin

    def test_contract(tmp_path):
        check_model_plugin("mine", runs_root=tmp_path)      # entry-point name, module or object

or by subclassing the pytest class, which gives one test per check::

    from cifarfw.testing import ModelPluginContract

    class TestMine(ModelPluginContract):
        plugin = "mine"

What is checked (docs/plugin-guide.md explains each):

* ``hooks``: every hook implementation is a cifarfw hook (no typos) and the plugin's
  declared ``CIFARFW_HOOK_API`` is one this core supports;
* ``light-import``: importing the plugin module imports no deep-learning framework
  (``cifarfw --help`` loads every plugin);
* ``registration``: the plugin registers through the real hooks into a fresh
  :class:`~cifarfw.plugins.PluginHost`, without errors, at least one model;
* ``build``, ``forward``: the model builds and maps a batch at its declared input size to
  ``(batch, num_classes)`` finite outputs;
* ``learns``: a few optimizer steps on a tiny fixed batch lower the loss;
* ``recipes``: every recipe resolves to a valid config the trainer accepts;
* ``trainer-run``: the framework's registered trainer trains the model through
  :mod:`cifarfw.runner` on a tiny synthetic dataset, emitting the events in order, and
  run.json reports the parameter counts, every epoch's metrics and the final metrics.

Two helpers for a plugin's own CLI tests: :func:`run_cli` runs ``cifarfw ...`` in this
process and returns ``(exit code, stdout, stderr)``; :func:`assert_one_line_error` checks
that a user error ended as the CLI promises (one ``Error:`` line, non-zero, no traceback).

``build``/``forward``/``learns`` need a :class:`FrameworkAdapter` for the model's
framework; torch and keras have one here (imported lazily). Nothing in this module
imports a framework at import time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from cifarfw import hookspecs
from cifarfw.hookspecs import HOOK_API_VERSION, hookimpl
from cifarfw.plugins import ENTRY_POINT_GROUP, PluginHost
from cifarfw.report import REQUIRED_METRICS
from cifarfw.specs import ModelSpec
from cifarfw.suggest import did_you_mean

__all__ = [
    "CheckResult",
    "ContractError",
    "ContractReport",
    "FrameworkAdapter",
    "KitSettings",
    "ModelPluginContract",
    "PluginUnderTest",
    "assert_one_line_error",
    "check_hooks",
    "check_import_is_light",
    "check_model_plugin",
    "check_params",
    "check_recipes",
    "check_trainer_run",
    "declared_hook_api",
    "hook_problems",
    "load_plugin",
    "run_cli",
]

# Frameworks a plugin module must not import at import time.
HEAVY_MODULES = ("torch", "tensorflow", "keras", "jax", "torchvision")
NUM_CLASSES = 10


class ContractError(AssertionError):
    """A plugin breaks the contract; the message says which check and what to fix."""


# --- the plugin under test ------------------------------------------------------------------


@dataclass
class PluginUnderTest:
    """A plugin registered into a fresh host, plus what it registered."""

    host: PluginHost
    name: str
    obj: object  # the module or object holding the hook implementations
    models: list[ModelSpec]

    def model(self, name: str | None) -> ModelSpec:
        if name is None:
            return self.models[0]
        for spec in self.models:
            if spec.name == name:
                return spec
        names = [m.name for m in self.models]
        raise ContractError(f"plugin {self.name!r} registers no model {name!r}{did_you_mean(name, names)}")


def _entry_points() -> list[Any]:
    import importlib.metadata as metadata

    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _module_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__


def load_plugin(plugin: str | object, name: str | None = None) -> PluginUnderTest:
    """Register ``plugin`` into a fresh :class:`PluginHost` with the other installed plugins.

    ``plugin`` is an entry-point name (``"mine"``), an importable module name
    (``"cifarfw_mine.plugin"``), a module, or an object with hook implementations. The
    other installed plugins are loaded too, so the model's trainer is there; a broken
    one among them is ignored.
    """
    if isinstance(plugin, str):
        for ep in _entry_points():
            if ep.name == plugin:
                try:
                    obj = ep.load()
                except Exception as err:
                    raise ContractError(
                        f"entry point {ep.name} = {ep.value} does not import: {type(err).__name__}: {err}"
                    ) from err
                return _register(obj, name or ep.name)
        try:
            import importlib

            obj = importlib.import_module(plugin)
        except ImportError as err:
            installed = [ep.name for ep in _entry_points()]
            raise ContractError(
                f"no installed plugin {plugin!r}{did_you_mean(plugin, installed)} and no module of that name "
                f"({err}); install the plugin (pip install -e .) or pass its module"
            ) from None
        return _register(obj, name or _entry_point_name(obj) or plugin)
    return _register(plugin, name or _entry_point_name(plugin) or _module_name(plugin).rsplit(".", 1)[-1])


def _entry_point_name(obj: object) -> str | None:
    module = _module_name(obj)
    for ep in _entry_points():
        if ep.value.split(":")[0] == module:
            return ep.name
    return None


def _register(obj: object, name: str) -> PluginUnderTest:
    host = PluginHost(load_entry_points=False)
    host.add(obj, name)
    module = _module_name(obj)
    # The other installed plugins (the trainer, mostly); not the one under test again.
    for ep in _entry_points():
        if ep.name == name or ep.value.split(":")[0] == module or ep.name in host.plugins:
            continue
        try:
            other = ep.load()
        except Exception:  # someone else's broken plugin is not this plugin's failure
            continue
        if other is obj:
            continue
        host.add(other, ep.name, distribution=ep.dist.name if ep.dist else "")
    info = host.plugins[name]
    if info.status != "ok":
        raise ContractError(f"plugin {name!r} did not register: {info.error}")
    host.collect()
    info = host.plugins[name]
    if info.status != "ok":
        raise ContractError(f"plugin {name!r}: registration failed: {info.error}")
    models = host.models_of(name)
    if not models:
        raise ContractError(
            f"plugin {name!r} registers no model: add a @hookimpl register_models(register) that calls "
            "register(ModelSpec(...))"
        )
    return PluginUnderTest(host, name, obj, models)


# --- hooks and imports --------------------------------------------------------------------


def declared_hook_api(obj: object) -> int | None:
    """The hook-API version a plugin declares with ``CIFARFW_HOOK_API = N`` (or None)."""
    value = getattr(obj, "CIFARFW_HOOK_API", None)
    if value is None and not isinstance(obj, ModuleType):
        value = getattr(sys.modules.get(type(obj).__module__), "CIFARFW_HOOK_API", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def hook_problems(obj: object) -> list[str]:
    """What is wrong with a plugin's hook implementations, each with the fix (empty = fine)."""
    import inspect

    problems = []
    known = {n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec")}
    for attr in dir(obj):
        try:
            value = getattr(obj, attr)
        except Exception:
            continue
        if not hasattr(value, f"{hookspecs.PROJECT}_impl"):
            continue
        if attr not in known:
            problems.append(
                f"{attr} is marked @hookimpl but is not a cifarfw hook{did_you_mean(attr, known)} "
                "(docs/hooks.md lists them)"
            )
            continue
        spec_args = set(inspect.signature(getattr(hookspecs, attr)).parameters)
        try:
            impl_args = [p for p in inspect.signature(value).parameters if p != "self"]
        except (TypeError, ValueError):
            continue
        extra = [a for a in impl_args if a not in spec_args]
        if extra:
            problems.append(
                f"{attr}() takes {', '.join(extra)}, which this cifarfw (hook API {HOOK_API_VERSION}) does not "
                f"pass; name only arguments of {attr}({', '.join(sorted(spec_args))}) or upgrade cifarfw"
            )
    declared = declared_hook_api(obj)
    if declared is not None and declared > HOOK_API_VERSION:
        problems.append(
            f"the plugin is written for hook API {declared} (CIFARFW_HOOK_API) but this cifarfw has hook API "
            f"{HOOK_API_VERSION}: upgrade cifarfw"
        )
    return problems


def check_hooks(obj: object) -> None:
    problems = hook_problems(obj)
    if problems:
        raise ContractError("; ".join(problems))


def check_import_is_light(module: str | object) -> None:
    """Importing the plugin module in a fresh interpreter imports no deep-learning framework."""
    name = module if isinstance(module, str) else _module_name(module)
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({name!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ContractError(f"importing {name} fails in a fresh interpreter: {last}")
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    if heavy:
        raise ContractError(
            f"importing {name} imports {', '.join(heavy)}; cifarfw loads every plugin for each command, so import "
            "frameworks inside the model factory, the trainer or validate(), not at module level"
        )


# --- framework adapters ---------------------------------------------------------------------


class FrameworkAdapter(Protocol):
    """What the kit needs to know about a framework to build, run and train a model.

    ``images`` are float32, normalised, (N, H, W, C); ``labels`` int64 (N,).
    """

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> Any: ...

    def forward(self, model: Any, images: np.ndarray) -> np.ndarray: ...

    def count_params(self, model: Any) -> tuple[int, int]: ...

    def loss_before_after(
        self, model: Any, images: np.ndarray, labels: np.ndarray, steps: int
    ) -> tuple[float, float]: ...


class TorchAdapter:
    """torch.nn.Module models: NCHW float tensors, logits out, Adam on trainable parameters."""

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> Any:
        import torch

        model = spec.factory(num_classes=num_classes, options=dict(options))
        if not isinstance(model, torch.nn.Module):
            raise ContractError(
                f"model {spec.name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model

    def _tensor(self, images: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    @staticmethod
    @contextmanager
    def _one_thread() -> Iterator[None]:
        """The kit's batches are tiny: one thread is faster than several that contend
        (several times faster on a busy machine)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def forward(self, model: Any, images: np.ndarray) -> np.ndarray:
        import torch

        model.eval()
        with self._one_thread(), torch.no_grad():
            out = model(self._tensor(images))
        return out.float().numpy()

    def count_params(self, model: Any) -> tuple[int, int]:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return int(total), int(trainable)

    def loss_before_after(self, model: Any, images: np.ndarray, labels: np.ndarray, steps: int) -> tuple[float, float]:
        import torch
        import torch.nn.functional as F

        x, y = self._tensor(images), torch.from_numpy(labels)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ContractError("the model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=1e-3)
        model.train()

        def loss_now() -> float:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)  # the same dropout masks each time: a deterministic loss
                return float(F.cross_entropy(model(x).float(), y))

        with self._one_thread():
            before = loss_now()
            for _ in range(steps):
                optimizer.zero_grad()
                F.cross_entropy(model(x).float(), y).backward()
                optimizer.step()
            return before, loss_now()


class KerasAdapter:
    """keras.Model models: NHWC float arrays; outputs may be logits or probabilities."""

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> Any:
        keras = _keras()
        model = spec.factory(num_classes=num_classes, options=dict(options))
        if not isinstance(model, keras.Model):
            raise ContractError(f"model {spec.name!r}: the factory returned {type(model).__name__}, not a keras.Model")
        return model

    def forward(self, model: Any, images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False), dtype=np.float32)

    def count_params(self, model: Any) -> tuple[int, int]:
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return int(model.count_params()), trainable

    def loss_before_after(self, model: Any, images: np.ndarray, labels: np.ndarray, steps: int) -> tuple[float, float]:
        keras = _keras()
        out = self.forward(model, images)
        probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1, atol=1e-3))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)

        def loss_now() -> float:
            return float(loss(labels, model(images, training=False)))

        before = loss_now()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        return before, loss_now()


def _keras() -> Any:
    """Keras as the keras trainer imports it, when installed: TensorFlow backend, quiet logs,
    and torch's triton loaded before TensorFlow (the other order crashes the process when
    both frameworks are installed)."""
    import importlib

    try:
        return importlib.import_module("cifarfw_keras._tf").keras
    except ImportError:
        import keras

        return keras


ADAPTERS: dict[str, Callable[[], FrameworkAdapter]] = {"torch": TorchAdapter, "keras": KerasAdapter}


def _adapter(framework: str, adapter: FrameworkAdapter | None) -> FrameworkAdapter | None:
    if adapter is not None:
        return adapter
    factory = ADAPTERS.get(framework)
    return factory() if factory is not None else None


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
def _runs_root(path: str | os.PathLike | None) -> Iterator[Path]:
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="cifarfw-contract-") as tmp:
        yield Path(tmp)


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
    from cifarfw import runner
    from cifarfw.errors import CifarfwError

    flags: dict[str, Any] = {
        "dataset": "synthetic",
        "dataset_options": {"train_size": train_size, "test_size": test_size},
        "epochs": epochs,
        "batch_size": batch_size,
        "device": "cpu",
        "compile": False,
        "prediction_samples": 4,
        "name": "contract",
    }
    if options:
        flags["model_options"] = dict(options)
    recorder = _EventRecorder()
    with _runs_root(runs_root) as root:
        flags["runs_root"] = str(root)
        try:
            plugin, resolved_spec, config = runner.resolve(put.host, put.name, spec.name, {}, flags)
        except CifarfwError as err:
            raise ContractError(f"model {spec.name!r}: a run on synthetic data does not resolve: {err}") from err
        put.host.pm.register(recorder, name=f"contract-recorder-{id(recorder)}")
        try:
            run_dir = runner.execute(put.host, plugin, resolved_spec, config)
        except CifarfwError as err:
            raise ContractError(f"model {spec.name!r}: the {spec.framework} trainer failed: {err}") from err
        finally:
            put.host.pm.unregister(recorder)
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        _check_events(spec, recorder, epochs, test_size)
        _check_record(spec, record, epochs, expected_total_params)
        if not (run_dir / "predictions.npz").is_file():
            raise ContractError("the run wrote no predictions.npz: the trainer must emit on_predictions at the end")
    return record


def _check_events(spec: ModelSpec, rec: _EventRecorder, epochs: int, test_size: int) -> None:
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
    p = predictions[0]
    labels, preds, images = (np.asarray(p[k]) for k in ("labels", "predictions", "images"))
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


def _check_record(spec: ModelSpec, record: Mapping[str, Any], epochs: int, expected_total: int | None) -> None:
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


# --- everything at once ----------------------------------------------------------------------


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


# --- CLI helpers for a plugin's own tests -----------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    """``cifarfw ARGS`` in this process: ``(exit code, stdout, stderr)``.

    Faster than a subprocess and sees monkeypatched state (environment, entry points);
    what child processes (torchrun) print goes to the real streams, not into the result.
    """
    from cifarfw.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """A user error as the CLI promises it: a non-zero exit and exactly one line on stderr,
    starting ``Error:``, holding each of ``fragments``, no traceback (``warning:`` lines
    aside). Returns that line."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code != 0, f"exit code 0, expected an error; stderr: {err!r}"
    assert "Traceback" not in err, f"a Traceback on stderr: {err!r}"
    assert len(lines) == 1, f"expected one error line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("Error: "), f"the line does not start with 'Error: ': {lines[0]!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} is not in {lines[0]!r}"
    return lines[0]


@dataclass
class CheckResult:
    name: str  # "registration", "forward[mine]", ...
    ok: bool | None  # None = skipped
    detail: str = ""


@dataclass
class ContractReport:
    plugin: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        lines = [f"contract of plugin {self.plugin!r}:"]
        for r in self.results:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[r.ok]
            lines.append(f"  {mark} {r.name}{': ' + r.detail if r.detail else ''}")
        return "\n".join(lines)


@dataclass
class KitSettings:
    """How :func:`check_model_plugin` checks each model (its keyword arguments)."""

    options: Mapping[str, Any] = field(default_factory=dict)
    adapter: FrameworkAdapter | None = None
    expected_params: Mapping[str, int] | None = None
    learn_batch: int = 20
    learn_steps: int = 8
    epochs: int = 1
    train_size: int = 60
    test_size: int = 30
    runs_root: str | os.PathLike | None = None


class _Checks:
    """Runs named checks into a report: a failure is recorded and the others still run."""

    def __init__(self, report: ContractReport, skip: Sequence[str]) -> None:
        self.report, self.skip = report, set(skip)

    def attempt(self, check: str, fn: Callable[[], str | None]) -> bool:
        if check.split("[")[0] in self.skip:
            self.report.results.append(CheckResult(check, None, "skipped on request"))
            return True
        try:
            detail = fn()
        except ContractError as err:
            self.report.results.append(CheckResult(check, False, str(err)))
            return False
        except Exception as err:
            self.report.results.append(CheckResult(check, False, f"{type(err).__name__}: {err}"))
            return False
        self.report.results.append(CheckResult(check, True, detail or ""))
        return True

    def skipped(self, check: str, why: str) -> None:
        self.report.results.append(CheckResult(check, None, why))


def check_model_plugin(
    plugin: str | object,
    model: str | None = None,
    *,
    name: str | None = None,
    skip: Sequence[str] = (),
    raise_on_failure: bool = True,
    **settings: Any,
) -> ContractReport:
    """Run every check on ``plugin`` (entry-point name, module name, module or object) and
    its ``model`` (default: every model it registers).

    Keyword arguments (see :class:`KitSettings`): ``options``, model options for the checks
    (e.g. ``{"weights": "none"}`` to avoid a download); ``expected_params``
    (``{"total": n, "trainable": m}``) pins the parameter counts; ``adapter`` for a
    framework other than torch and keras; ``learn_batch``/``learn_steps``;
    ``epochs``/``train_size``/``test_size`` of the trainer run; ``runs_root`` (default: a
    temporary folder). ``skip`` names checks not to run (``"light-import"``, ``"learns"``,
    ``"trainer-run"``, ...). Raises :class:`ContractError` listing the failures unless
    ``raise_on_failure`` is false; returns the report.
    """
    kit = KitSettings(**settings)
    report = ContractReport(plugin if isinstance(plugin, str) else _module_name(plugin))
    checks = _Checks(report, skip)
    loaded: list[PluginUnderTest] = []

    def register() -> str:
        loaded.append(load_plugin(plugin, name))
        report.plugin = loaded[0].name
        return "registers " + ", ".join(f"model:{m.name}" for m in loaded[0].models)

    if checks.attempt("registration", register):
        put = loaded[0]
        checks.attempt("hooks", lambda: check_hooks(put.obj))
        checks.attempt("light-import", lambda: check_import_is_light(put.obj))
        for spec in [put.model(model)] if model else put.models:
            _check_one_model(checks, put, spec, kit)
    if raise_on_failure and not report.ok:
        raise ContractError(str(report))
    return report


def _check_one_model(checks: _Checks, put: PluginUnderTest, spec: ModelSpec, kit: KitSettings) -> None:
    from cifarfw.config import resolve_model_options

    tag = f"[{spec.name}]"
    resolved = resolve_model_options(spec, kit.options)
    fw = _adapter(spec.framework, kit.adapter)
    counts: list[tuple[int, int]] = []
    if fw is None:
        for check in ("forward", "learns"):
            checks.skipped(check + tag, f"no adapter for framework {spec.framework!r}")
    else:

        def forward() -> str:
            counts.append(check_params(fw, check_forward(fw, spec, resolved), spec, kit.expected_params))
            total, trainable = counts[0]
            return (
                f"{spec.input_size}x{spec.input_size} -> (4, {NUM_CLASSES}); {total:,} params ({trainable:,} trainable)"
            )

        checks.attempt("forward" + tag, forward)
        checks.attempt("learns" + tag, lambda: check_learns(fw, spec, resolved, kit.learn_batch, kit.learn_steps))
    checks.attempt("recipes" + tag, lambda: "validate: " + (", ".join(check_recipes(put, spec, kit.options)) or "none"))

    def run() -> str:
        record = check_trainer_run(
            put, spec, kit.options, kit.runs_root, epochs=kit.epochs, train_size=kit.train_size,
            test_size=kit.test_size, expected_total_params=counts[0][0] if counts else None,
        )  # fmt: skip
        return f"run.json params {record['params']}, test_acc {record['epochs'][-1]['test_acc']:.3f}"

    checks.attempt("trainer-run" + tag, run)


# --- pytest ------------------------------------------------------------------------------------


class ModelPluginContract:
    """Subclass in a test module (``class TestMine(ModelPluginContract): plugin = "mine"``)
    to get one pytest test per check. Class attributes configure it like
    :func:`check_model_plugin`'s arguments."""

    plugin: str | object = ""
    model: str | None = None
    options: Mapping[str, Any] = {}
    expected_params: Mapping[str, int] | None = None
    adapter: FrameworkAdapter | None = None
    learn_batch: int = 20
    learn_steps: int = 8
    train_size: int = 60
    test_size: int = 30

    def _put(self) -> PluginUnderTest:
        if not self.plugin:
            raise ContractError(f"{type(self).__name__}: set the class attribute plugin = '<entry-point name>'")
        return load_plugin(self.plugin)

    def _specs(self, put: PluginUnderTest) -> list[ModelSpec]:
        return [put.model(self.model)] if self.model else put.models

    def _fw(self, spec: ModelSpec) -> FrameworkAdapter:
        fw = _adapter(spec.framework, self.adapter)
        if fw is None:
            import pytest

            pytest.skip(f"no adapter for framework {spec.framework!r}; set adapter = ...")
        return fw

    def _options(self, spec: ModelSpec) -> dict[str, Any]:
        from cifarfw.config import resolve_model_options

        return resolve_model_options(spec, self.options)

    def test_registration(self) -> None:
        put = self._put()
        assert put.host.plugins[put.name].status == "ok"

    def test_hooks(self) -> None:
        check_hooks(self._put().obj)

    def test_import_is_light(self) -> None:
        check_import_is_light(self._put().obj)

    def test_forward(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            fw = self._fw(spec)
            check_params(fw, check_forward(fw, spec, self._options(spec)), spec, self.expected_params)

    def test_learns(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            check_learns(self._fw(spec), spec, self._options(spec), self.learn_batch, self.learn_steps)

    def test_recipes(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            check_recipes(put, spec, self.options)

    def test_trainer_run(self, tmp_path: Path) -> None:
        put = self._put()
        for spec in self._specs(put):
            fw = _adapter(spec.framework, self.adapter)
            total = fw.count_params(check_forward(fw, spec, self._options(spec)))[0] if fw else None
            check_trainer_run(
                put, spec, self.options, tmp_path / spec.name, train_size=self.train_size,
                test_size=self.test_size, expected_total_params=total,
            )  # fmt: skip
