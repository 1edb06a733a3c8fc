"""tf.distribute for the keras trainer: the strategy, the sharded input and the training loop.

Strategy (chosen from the environment, before any TensorFlow op runs):
  - ``TF_CONFIG`` naming more than one task -> ``MultiWorkerMirroredStrategy`` (one process per
    worker; collectives over gRPC, ring all-reduce on CPUs, NCCL on GPUs: TensorFlow's default
    communication options);
  - several local GPUs and ``--device auto`` -> ``MirroredStrategy`` over them;
  - otherwise none: the trainer's single-process path (``model.fit``), unchanged.

``--batch-size`` is the GLOBAL batch: each of the R replicas computes ``batch_size / R``
examples of every step (an error when R does not divide it), so one step consumes the same
examples as a single-process run's step. The learning rate is not rescaled.

Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585:
"Attempt to convert a value (PerReplica...) to a Tensor"), so a distributed run trains with
its own loop: a ``tf.function`` runs up to ``PROGRESS_EVERY`` steps of ``strategy.run``
(GradientTape, the loss summed over the replica's examples and divided by the global batch's
size, ``optimizer.apply_gradients``, which all-reduces the gradients), and the trainer's
``EventBridge`` receives the same epoch and batch events ``fit`` would send it, so events,
metric names, evaluation and checkpoints are the single-process path's.

Input: every worker builds the single-process pipeline (same epoch-derived shuffle and
augmentation seeds) and keeps its replicas' contiguous slices of each global batch, like
``AutoShardPolicy.DATA``: the global batches equal a single-process run's exactly, at the
cost of each worker preparing whole batches (cheap next to the model for small worlds).

Evaluation runs on every worker over the whole test set (no collectives; every rank reports
the same test metrics; a worker would otherwise wait at the next step for the chief). Only
rank 0 writes checkpoints (Keras 3's ``.keras`` save reads the local copies of the
variables, no collective), TensorBoard and run.json (the core gives other ranks no reporters).

Stopping: at each epoch end the workers agree (one all-reduce) whether a SIGINT/SIGTERM
reached any of them; if so all stop after the chief's checkpoint. A dead worker: TensorFlow's
health check (every 30 s) aborts the others' collectives, and every collective times out after
``CIFARFW_DIST_TIMEOUT`` seconds (default 120, the torch trainer's variable), so the others
fail with a one-line error naming ``--resume`` instead of hanging. Start-up waits for every
worker without a limit (TensorFlow's own cluster barrier).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cifarfw.errors import CifarfwError, RunInterrupted, UsageError
from cifarfw_keras import runtime
from cifarfw_keras._tf import keras, tf

if TYPE_CHECKING:
    from cifarfw.runs import Run

COLLECTIVE_TIMEOUT_ENV = "CIFARFW_DIST_TIMEOUT"  # shared with the torch trainer
DEFAULT_COLLECTIVE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Placement:
    """The strategy of a distributed run and what run.json says about it."""

    strategy: Any
    backend: str  # e.g. "tf.distribute.MultiWorkerMirroredStrategy/ring"
    replicas: int  # over all workers


def collective_timeout() -> float:
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        raise UsageError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r}: give a number of seconds") from None
    if value <= 0:
        raise UsageError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
    return value


def choose(run: Run) -> Placement | None:
    """The strategy the environment asks for, or None for the single-process path.

    Call it before any other TensorFlow op: MultiWorkerMirroredStrategy configures the
    collective runtime, which TensorFlow allows only at program start-up.
    """
    if run.world_size > 1:
        runtime.validate_launch(run.config)  # TF_CONFIG present, batch divisible (checked before the run too)
        gpus = tf.config.list_physical_devices("GPU") if run.config.device != "cpu" else []
        if run.config.device == "cpu":
            tf.config.set_visible_devices([], "GPU")
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout())
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        _sigterm_back_to_python()
        # AUTO, TensorFlow's default, is NCCL between GPUs and ring all-reduce otherwise.
        implementation = "nccl" if gpus else "ring"
        return Placement(strategy, f"tf.distribute.MultiWorkerMirroredStrategy/{implementation}", _replicas(strategy))
    if run.config.device == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            return Placement(strategy, "tf.distribute.MirroredStrategy/nccl", _replicas(strategy))
    return None


def _sigterm_back_to_python() -> None:
    """TensorFlow's coordination service installs a C-level SIGTERM handler (its preemption
    notice) that swallows the signal; hand SIGTERM back to the Python handler the core set
    (stop after the next checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _replicas(strategy: Any) -> int:
    return int(strategy.num_replicas_in_sync)


def check_batch(batch_size: int, placement: Placement) -> None:
    if batch_size % placement.replicas:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must divide evenly among the {placement.replicas} "
            f"replicas; use a multiple of {placement.replicas}"
        )


@contextlib.contextmanager
def device_scope(placement: Placement | None, device: str) -> Iterator[None]:
    """The single-process run's device, or nothing: the strategy places a distributed run."""
    with tf.device(device) if placement is None else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def model_scope(placement: Placement | None) -> Iterator[None]:
    """The strategy's scope, where the model's and optimizer's variables are made."""
    with placement.strategy.scope() if placement is not None else contextlib.nullcontext():
        yield


def replica_slices(global_batches: Any, worker: int, workers: int, replicas: int) -> Any:
    """(x, y) global batches -> this worker's (x, y, global batch size) slices, one element per
    local replica and step (tf.distribute hands consecutive elements to the local replicas).

    Replica g of R takes rows [n*g//R, n*(g+1)//R) of a batch of n, so a short last batch
    is split as evenly as it can be."""
    local = replicas // workers

    def part(x: Any, y: Any, n: Any, g: Any) -> tuple[Any, Any, Any]:
        lo = n * g // replicas
        hi = n * (g + 1) // replicas
        return x[lo:hi], y[lo:hi], tf.cast(n, tf.float32)

    def split(x: Any, y: Any) -> Any:
        n = tf.shape(x)[0]
        if local == 1:
            return part(x, y, n, worker)
        first = worker * local
        return tf.data.Dataset.range(first, first + local).map(lambda g: part(x, y, n, tf.cast(g, tf.int32)))

    if local == 1:
        return global_batches.map(split)
    return global_batches.flat_map(split)


class DistributedLoop:
    """Trains a compiled model under ``placement.strategy`` with the events ``model.fit``
    would send a callback, so the trainer's EventBridge drives events and checkpoints."""

    def __init__(self, placement: Placement, model: Any, train: Any, steps: int, batch_size: int, count: int) -> None:
        strategy = placement.strategy
        self.strategy = strategy
        self.model = model
        self.steps = steps
        self.batch_size = batch_size
        self.count = count
        self.dataset = strategy.distribute_datasets_from_function(  # one input pipeline per worker
            lambda ctx: replica_slices(train, ctx.input_pipeline_id, ctx.num_input_pipelines, ctx.num_replicas_in_sync)
        )
        optimizer = model.optimizer
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            # Per-replica sums, added up over every replica of every worker when read.
            sums = dict(
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            self.loss_sum = tf.Variable(0.0, name="train_loss_sum", **sums)
            self.correct = tf.Variable(0.0, name="train_correct", **sums)
        loss_fn = per_example_loss(model.loss)
        loss_sum, correct = self.loss_sum, self.correct

        def replica_step(x: Any, y: Any, n: Any) -> None:
            with tf.GradientTape() as tape:
                predictions = model(x, training=True)
                per_example = tf.cast(loss_fn(y, predictions), tf.float32)
                loss = tf.reduce_sum(per_example) / n  # this replica's share of the global batch's mean
                if model.losses:  # regularisation: once per step in all, so a 1/R share per replica
                    loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_weights)
            optimizer.apply_gradients(zip(gradients, model.trainable_weights, strict=True))  # sums over replicas
            loss_sum.assign_add(loss * n)
            hits = tf.equal(tf.argmax(predictions, axis=-1), tf.argmax(y, axis=-1))
            correct.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32)))

        def run_steps(iterator: Any, count: Any) -> tuple[Any, Any]:
            for _ in tf.range(count):
                strategy.run(replica_step, args=next(iterator))
            return loss_sum.read_value(), correct.read_value()  # one all-reduce per call

        self.run_steps = tf.function(run_steps)

    def fit(self, run: Run, bridge: Any, initial_epoch: int, epochs: int, every: int) -> None:
        """Epochs ``initial_epoch``..``epochs - 1``, calling ``bridge`` as ``model.fit`` does
        with ``steps_per_execution=every``: batch ends every ``every`` steps, running means.
        A peer that died or stopped answering -> CifarfwError naming ``--resume``."""
        try:
            self._fit(run, bridge, initial_epoch, epochs, every)
        except RunInterrupted as err:
            if run.is_main:
                raise
            name = signal.Signals(run.stop_requested).name
            raise RunInterrupted(  # this worker's run id names only its scratch folder
                f"{name}: this worker stopped with the chief after its last checkpoint; continue with "
                "`cifarfw run --resume <the chief's run id>` on every worker",
                run.stop_requested,
            ) from err
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as err:
            ref = run.id if run.is_main else "<the chief's run id>"
            raise CifarfwError(
                f"a worker of this distributed run died or stopped answering ({type(err).__name__}: "
                f"{error_cause(err.message)}); "
                f"start every worker again with `cifarfw run --resume {ref}`"
            ) from None

    def _stop_signal_of_any_worker(self, own: int) -> int:
        """The signal that asked some worker to stop (SIGINT before SIGTERM), else 0; the same
        answer on every worker."""
        flags = tf.constant([float(own == signal.SIGINT), float(own not in (0, signal.SIGINT))])
        total = self.strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", flags))
        counts = self.strategy.experimental_local_results(total)[0].numpy()
        return signal.SIGINT if counts[0] > 0 else signal.SIGTERM if counts[1] > 0 else 0

    def _fit(self, run: Run, bridge: Any, initial_epoch: int, epochs: int, every: int) -> None:
        bridge.set_model(self.model)
        for epoch in range(initial_epoch, epochs):
            bridge.on_epoch_begin(epoch)  # sets the epoch the input pipeline reads
            self.loss_sum.assign(0.0)
            self.correct.assign(0.0)
            iterator = iter(self.dataset)
            done = 0
            loss_sum = correct = 0.0
            while done < self.steps:
                count = min(every, self.steps - done)
                loss_t, correct_t = self.run_steps(iterator, tf.constant(count))
                loss_sum, correct = float(loss_t), float(correct_t)
                done += count
                seen = min(done * self.batch_size, self.count)
                bridge.on_train_batch_end(done - 1, {"loss": loss_sum / seen})
            stop = self._stop_signal_of_any_worker(run.stop_requested)
            if stop and not run.stop_requested:
                run.stop_requested = stop  # a peer got the signal: stop with it
            bridge.on_epoch_end(epoch, {"loss": loss_sum / self.count, "acc": correct / self.count})


def error_cause(message: str) -> str:
    """The cause in a TensorFlow error message, on one line: without the "Graph execution
    error" traceback of where the op was defined, node names and op annotations."""
    text = re.sub(r"\[\[.*?\]\]|\{\{.*?\}\}|\[Op:[^\]]*\]", "", str(message))
    skip = ("Graph execution error", "Detected at node")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.strip().startswith(skip)]
    return " ".join((paragraphs[0] if paragraphs else text).split())[:200]


def per_example_loss(compiled: Any) -> Any:
    """The compiled Keras loss, unreduced (one value per example)."""
    if isinstance(compiled, keras.losses.Loss):
        return type(compiled).from_config({**compiled.get_config(), "reduction": None})
    loss = keras.losses.get(compiled)
    if isinstance(loss, keras.losses.Loss):
        return type(loss).from_config({**loss.get_config(), "reduction": None})
    return loss  # a plain function already returns one value per example
