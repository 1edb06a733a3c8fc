"""The Keras trainer: compile/fit any ``keras.Model`` as the run configuration says.

Keras's own loop trains (``steps_per_execution`` batches per call into the graph, which
is what makes small batches fast on a CPU); a callback bridges its epoch and batch events
to cifarfw's event hooks with the metric names every trainer uses, evaluates the test
set, writes checkpoints and stops on a non-finite loss.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarfw.errors import NonFiniteLossError, PluginError, UsageError
from cifarfw.specs import RunResult
from cifarfw_keras import checkpoints, cost, data, distributed, runtime
from cifarfw_keras._tf import keras, tf

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.runs import Run

PROGRESS_EVERY = 20  # batches per graph call, and so between progress events
EVAL_BATCH = 1000
_EPS = 1e-7


# --- optimizer and schedule ------------------------------------------------------------


def learning_rate(config: RunConfig, steps: int) -> Any:
    """A float or a built-in (serialisable) Keras LearningRateSchedule, stepped per batch."""
    total = max(1, config.epochs * steps)
    lr = config.lr
    if config.schedule == "constant":
        return lr
    if config.schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=config.step_epochs * steps, decay_rate=config.step_gamma, staircase=True
        )
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.0)
    if config.schedule == "onecycle":
        # torch's OneCycleLR shape: from lr/25 up to lr over the warm-up, then cosine down to lr/25/1e4.
        warmup = round(config.warmup_fraction * total)
        return keras.optimizers.schedules.CosineDecay(
            lr / 25.0, decay_steps=max(1, total - warmup), alpha=1.0 / 25e4, warmup_target=lr, warmup_steps=warmup
        )
    raise UsageError(f"unknown schedule {config.schedule!r}")


def optimizer(config: RunConfig, steps: int) -> Any:
    lr = learning_rate(config, steps)
    decay = config.weight_decay or None  # Keras applies it decoupled (AdamW-style) for every optimizer
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay)
    if config.optimizer == "rmsprop":
        # Keras's defaults (rho 0.9, no momentum): --momentum's default 0.9 is SGD's, not RMSprop's.
        return keras.optimizers.RMSprop(lr, weight_decay=decay)
    raise UsageError(f"unknown optimizer {config.optimizer!r}")


# --- model ------------------------------------------------------------------------------


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy for the block (layers read it when they are created)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(run: Run, policy: str) -> Any:
    spec, cfg = run.model, run.config
    with dtype_policy(policy):
        model = spec.factory(num_classes=run.dataset.num_classes, options=dict(cfg.model_options))
    if not isinstance(model, keras.Model):
        raise PluginError(f"model {spec.name!r}: its factory returned {type(model).__name__}, not a keras.Model")
    return model


def outputs_probabilities(model: Any, input_size: int) -> bool:
    """True when the model ends in a softmax (outputs sum to 1), False for logits."""
    probe = tf.random.stateless_uniform([4, input_size, input_size, 3], seed=[1, 2])
    out = np.asarray(tf.cast(model(probe, training=False), tf.float32))
    if out.ndim != 2:
        raise PluginError(f"the model's output has shape {out.shape}; a classifier must output (batch, classes)")
    return bool((out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-2))


def describe(model: Any, input_size: int) -> tuple[dict[str, int], str, Any]:
    """(parameter counts, summary text, GraphDef or None) for on_model_built."""
    total = int(model.count_params())
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    lines: list[str] = []
    model.summary(print_fn=lambda text, *args, **kwargs: lines.append(str(text)))
    graph = None
    with contextlib.suppress(Exception):  # the graph is a nicety; a model that won't trace still trains
        spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32)
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph.as_graph_def()
    return {"total": total, "trainable": trainable}, "\n".join(lines), graph


def compile_model(model: Any, config: RunConfig, steps: int, probabilities: bool) -> None:
    model.compile(
        optimizer=optimizer(config, steps),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=not probabilities, label_smoothing=config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
        steps_per_execution=min(PROGRESS_EVERY, steps),
        jit_compile=bool(config.compile),
    )


# --- evaluation -------------------------------------------------------------------------


class Evaluator:
    """Test-set loss, accuracy and predictions; with TTA, probabilities averaged with the
    horizontally flipped images'."""

    def __init__(self, model: Any, dataset: Any, labels: np.ndarray, probabilities: bool, config: RunConfig) -> None:
        self.dataset = dataset
        self.labels = labels
        self.smoothing = config.label_smoothing

        def probs(x: Any) -> Any:
            out = tf.cast(model(x, training=False), tf.float32)
            return out if probabilities else tf.nn.softmax(out)

        def step(x: Any) -> Any:
            p = probs(x)
            if config.tta:
                p = (p + probs(tf.reverse(x, axis=[2]))) / 2.0
            return p

        self.step = tf.function(step, reduce_retracing=True)

    def __call__(self) -> tuple[float, float, np.ndarray]:
        p = np.concatenate([np.asarray(self.step(x)) for x in self.dataset])
        log_p = np.log(np.clip(p, _EPS, 1.0))
        nll = -log_p[np.arange(len(self.labels)), self.labels]
        loss = (1.0 - self.smoothing) * nll - self.smoothing * log_p.mean(axis=1)
        predictions = p.argmax(axis=1)
        return float(loss.mean()), float((predictions == self.labels).mean()), predictions


# --- the bridge -------------------------------------------------------------------------


class EventBridge(keras.callbacks.Callback):
    """Keras's epoch and batch events -> cifarfw's hooks, test evaluation and checkpoints."""

    def __init__(self, run: Run, evaluator: Evaluator, epoch_var: Any, steps: int, state: dict[str, Any]) -> None:
        super().__init__()
        self.run = run
        self.evaluator = evaluator
        self.epoch_var = epoch_var
        self.steps = steps
        self.train_images = len(run.dataset.train)
        self.state = state  # seed, model name, accumulated train_seconds: saved with each checkpoint
        self.metrics: dict[str, float] | None = None
        self.predictions: np.ndarray | None = None
        self.epoch_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_var.assign(epoch)  # before Keras opens this epoch's data iterator
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        epoch = int(self.epoch_var.numpy()) + 1
        step = min(batch + 1, self.steps)
        if not np.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} in epoch {epoch} (batch {step}); lower --lr or use --precision "
                "fp32; the last good checkpoint is kept"
            )
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        progress = {"loss": loss, "acc": float((logs or {}).get("acc", 0.0)), "lr": lr}  # running accuracy
        self.run.emit("on_train_progress", epoch=epoch, step=step, steps=self.steps, metrics=progress)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        train_seconds = time.perf_counter() - self.epoch_start
        self.state["train_seconds"] = self.state.get("train_seconds", 0.0) + train_seconds
        test_loss, test_acc, self.predictions = self.evaluator()
        metrics = {
            "train_loss": float(logs["loss"]),
            "train_acc": float(logs["acc"]),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),  # a MirroredVariable too
            "seconds": time.perf_counter() - self.epoch_start,
            "train_images_per_s": self.train_images / max(train_seconds, 1e-9),  # as the torch trainer reports
        }
        if not np.isfinite(metrics["train_loss"]):
            raise NonFiniteLossError(f"the training loss became {metrics['train_loss']} in epoch {epoch + 1}")
        self.metrics = metrics
        self.run.emit("on_epoch_end", epoch=epoch + 1, metrics=metrics)
        if self.run.config.checkpoint and self.run.is_main:
            path = checkpoints.save(self.model, self.run.checkpoint_dir, epoch + 1, {**self.state, "metrics": metrics})
            self.run.emit("on_checkpoint", epoch=epoch + 1, path=str(path))  # raises when a signal asked to stop
        elif self.run.stop_requested:
            raise self.run.interrupted()


# --- the trainer --------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["cifarfw-keras"] = metadata.version("cifarfw-keras")
    return versions


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """TensorFlow's deterministic-ops switch for the run (process-global; switched back after
    when this TensorFlow can, since tests train several models in one process)."""
    if not enabled:
        yield
        return
    from tensorflow.python.framework import config as tf_config  # disable_op_determinism lives here only

    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()


class KerasTrainer:
    """Trains ``run.model`` (a Keras model factory) on ``run.dataset``."""

    def fit(self, run: Run) -> RunResult:
        cfg, spec, ds = run.config, run.model, run.dataset
        sleeping_idle_threads = runtime.stop_thread_spinning()  # before TensorFlow's runtime starts
        placement = distributed.choose(run)  # first: MultiWorkerMirroredStrategy must precede every TF op
        if placement is not None:
            distributed.check_batch(cfg.batch_size, placement)
            cfg.backend = run.record.setdefault("config", {})["backend"] = placement.backend
        previous = run.record.get("resolved") or {}  # a resume's record, kept by the core
        recorded = previous.get("threads") if run.resume_checkpoint is not None else None
        threads, honoured = runtime.set_threads(recorded if isinstance(recorded, dict) else None)
        if not honoured:
            from cifarfw.runner import warn

            warn(
                f"TensorFlow's thread pools were already started with {threads}, not the {previous['threads']} "
                "this run began with: results may differ in the last digits"
            )
        rt = runtime.resolve(cfg)
        run.record.setdefault("versions", {}).update(_versions())
        run.record.setdefault("hardware", {})["accelerator"] = rt.accelerator
        steps = data.steps_per_epoch(len(ds.train), cfg.batch_size)
        keras.utils.set_random_seed(cfg.seed)
        state: dict[str, Any] = {"model": spec.name, "seed": cfg.seed, "train_seconds": 0.0}
        start_epoch = 0
        with op_determinism(cfg.deterministic), distributed.device_scope(placement, rt.device):
            with distributed.model_scope(placement):  # the model's and optimizer's variables
                if run.resume_checkpoint is not None:
                    if run.is_main:
                        checkpoints.remove_leftovers(run.checkpoint_dir)
                    model, saved = checkpoints.load(run.resume_checkpoint, spec.name)
                    start_epoch = int(saved["epoch"])
                    state["train_seconds"] = float(saved.get("train_seconds", 0.0))
                    probabilities = outputs_probabilities(model, spec.input_size)
                    precision = _precision_of(model)
                else:
                    model = build_model(run, rt.policy)
                    probabilities = outputs_probabilities(model, spec.input_size)
                    compile_model(model, cfg, steps, probabilities)
                    precision = rt.precision
            run.record["resolved"] = {
                "device": rt.device,
                "precision": precision,
                "channels_last": keras.config.image_data_format() == "channels_last",
                "jit_compile": bool(cfg.compile),
                "steps_per_execution": min(PROGRESS_EVERY, steps),
                "outputs": "probabilities" if probabilities else "logits",
                "threads": threads,  # a resume reuses these (set_threads)
                "thread_spinning": not sleeping_idle_threads,
            }
            if placement is not None:
                run.record["resolved"].update(replicas=placement.replicas, jit_compile=False)
            if start_epoch:
                run.record["resolved"]["resumed_from_epoch"] = start_epoch
            params, summary, graph = describe(model, spec.input_size)
            run.emit("on_model_built", params=params, summary=summary, graph=graph)

            epoch_var = tf.Variable(start_epoch, dtype=tf.int64, trainable=False)
            augment = data.AugmentSettings(cfg.augment.crop_padding, cfg.augment.flip, cfg.augment.brightness)
            train = data.train_dataset(
                ds.train.images,
                ds.train.labels,
                num_classes=ds.num_classes,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch_var,
                augment=augment,
                input_size=spec.input_size,
                mean=spec.mean,
                std=spec.std,
            )
            test = data.test_dataset(
                ds.test.images, batch_size=EVAL_BATCH, input_size=spec.input_size, mean=spec.mean, std=spec.std
            )
            evaluator = Evaluator(model, test, ds.test.labels, probabilities, cfg)
            bridge = EventBridge(run, evaluator, epoch_var, steps, state)
            if start_epoch < cfg.epochs and placement is not None:  # Keras 3's fit fails under multi-worker
                loop = distributed.DistributedLoop(placement, model, train, steps, cfg.batch_size, len(ds.train))
                loop.fit(run, bridge, start_epoch, cfg.epochs, every=min(PROGRESS_EVERY, steps))
                metrics, predictions = bridge.metrics, bridge.predictions
            elif start_epoch < cfg.epochs:
                model.fit(
                    train, epochs=cfg.epochs, initial_epoch=start_epoch, verbose=0, shuffle=False, callbacks=[bridge]
                )
                metrics, predictions = bridge.metrics, bridge.predictions
            else:  # the checkpoint already holds every epoch: report it as it stands
                test_loss, test_acc, predictions = evaluator()
                metrics = {**saved.get("metrics", {}), "test_loss": test_loss, "test_acc": test_acc}
        assert metrics is not None and predictions is not None
        last_epoch = max(cfg.epochs, start_epoch)
        if run.is_main:
            k = cfg.prediction_samples
            run.emit(
                "on_predictions",
                epoch=last_epoch,
                labels=ds.test.labels,
                predictions=predictions.astype(np.int64),
                images=ds.test.images[:k],
            )
        cost.record(run, model, rt.device)  # run.json's cost (issue 17)
        return RunResult(
            final=dict(metrics),
            train_seconds=float(state["train_seconds"]),
            extra={"resumed_from_epoch": start_epoch} if start_epoch else {},
        )


def _precision_of(model: Any) -> str:
    name = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    return {policy: precision for precision, policy in runtime.POLICIES.items()}.get(name, name)
