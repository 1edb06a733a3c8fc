"""The torch trainer: trains any ``torch.nn.Module`` a model plugin builds.

One run, in order: resolve device and precision (:mod:`cifarfw_torch.runtime`), seed
torch/numpy/Python, build the model, emit ``on_model_built`` (parameter counts, a text
summary, the traced graph), put both splits on the device as single tensors
(:mod:`cifarfw_torch.pipeline`), optionally cache a frozen prefix's outputs
(:mod:`cifarfw_torch.features`), then per epoch: train on augmented batches, evaluate on
the test split, emit ``on_epoch_end``, write a checkpoint and emit ``on_checkpoint``.
At the end it emits ``on_predictions`` for the whole test split.

Metrics, per epoch:

* ``train_loss`` / ``train_acc``: the running average over the epoch's batches, in
  training mode on augmented batches (dropout on), as Keras reports them; no extra pass.
* ``test_loss`` / ``test_acc``: one pass over the test split in eval mode (with the
  horizontal-flip test-time augmentation when ``config.tta``: logits averaged over the
  image and its mirror). Both losses use the training criterion (cross-entropy with the
  run's label smoothing).
* ``lr``: the learning rate of the epoch's last step; ``seconds``: the epoch's wall time
  (training and evaluation); ``train_images_per_s``: training throughput.

Resuming: when ``run.resume_checkpoint`` is set, everything is restored from it (model,
optimizer, schedule, grad scaler, RNG states, history, training time) and training goes
on with the next epoch; each epoch's shuffle and augmentation come from a generator
seeded by (seed, epoch), so the data order is the one an uninterrupted run sees.

Distributed runs (torchrun, ``--nproc-per-node``): :mod:`cifarfw_torch.distributed` wraps
the model in DistributedDataParallel; each process trains on its block of every global
batch, metrics are reduced over processes and only rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarfw.config import Augment
from cifarfw.errors import NonFiniteLossError, PluginError, RunInterrupted, UsageError, WeightsError
from cifarfw.runs import Run
from cifarfw.specs import RunResult
from cifarfw_torch import checkpoints, distributed, features
from cifarfw_torch.graph import try_model_graph
from cifarfw_torch.optim import make_optimizer, make_scheduler
from cifarfw_torch.pipeline import BatchPipeline, DeviceSplit, EpochDraw, draw_epoch
from cifarfw_torch.runtime import (
    Runtime,
    cpu_threads,
    deterministic_mode,
    epoch_generator,
    resolve,
    seed_everything,
)

PROGRESS_EVERY = 10  # steps between on_train_progress events (and NaN checks)
HEAD_BLOCK = 4  # training steps whose batches go through a head's frozen layers together


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": m}`` counted from the model itself."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches of an epoch: the last, partial batch is kept unless it holds a single image
    per process (batch norm cannot train on one)."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest >= 2 * world_size else 0))


class TorchTrainer:
    """The trainer registered for framework ``torch``.

    ``max_steps`` (benchmarks only, not a config key) stops training after that many
    optimizer steps in total; the epoch it stops in is still evaluated and recorded.
    """

    def __init__(self, max_steps: int = 0) -> None:
        self.max_steps = max_steps

    def fit(self, run: Run) -> RunResult:
        runtime = resolve(run.config)
        runtime = dataclasses.replace(runtime, device=distributed.process_device(runtime.device, run))
        with (
            distributed.process_group(run, runtime.device) as group,
            deterministic_mode(run.config.deterministic, runtime.device),
            cpu_threads(runtime.device) as threads,
        ):
            return _Fit(run, runtime, self.max_steps, threads, group).train()


class _Fit:
    """The state of one training run."""

    def __init__(
        self,
        run: Run,
        runtime: Runtime,
        max_steps: int,
        threads: tuple[int, str],
        group: distributed.Group | None = None,
    ) -> None:
        self.run = run
        self.group = group or distributed.Group(device=runtime.device)  # data-parallel helpers
        self.config = config = run.config
        self.runtime = runtime
        self.max_steps = max_steps
        self.global_step = 0
        self.images_trained = 0  # by this process (a resumed run counts from its restart)
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.start_epoch = 1
        self._last_train_seconds = 0.0
        seed_everything(config.seed)
        self._record_environment(threads)

        self.model = self._build_model()
        self.split = features.frozen_split(self.model) if config.feature_cache else None
        if self.split is not None:
            run.record["resolved"]["feature_cache"] = features.cache_plan(config.augment)
        # With the cache, a head that starts with frozen layers (AlexNet's: dropout, the frozen
        # 9216→4096 layer, ReLU, dropout) runs those outside autograd: once per test image (see
        # _build_cache) and, in training, on several steps' batches at once (see _batches).
        self.head_split = features.eval_split(self.split[1]) if self.split is not None else None
        if self.head_split is not None:
            trained = self.head_split[1]
        else:
            trained = self.split[1] if self.split is not None else self.model
        trained = self.group.wrap(trained)  # DistributedDataParallel in a distributed run
        self.net: nn.Module = torch.compile(trained) if config.compile else trained
        if config.compile:
            run.record["resolved"]["compile"] = True

        size = run.model.input_size
        example = torch.zeros(1, 3, size, size, device=runtime.device).contiguous(memory_format=runtime.memory_format)
        graph, why = try_model_graph(self.model, example)
        if why:
            run.record.setdefault("notes", []).append(why)
        params = count_parameters(self.model)
        if params["trainable"] == 0:
            raise UsageError(f"model {run.model.name!r} has no trainable parameters with these options")
        run.emit("on_model_built", params=params, summary=_summary(self.model, params), graph=graph)

        dataset = run.dataset
        self.train_split = DeviceSplit.from_numpy(dataset.train.images, dataset.train.labels, runtime.device)
        self.test_split = DeviceSplit.from_numpy(dataset.test.images, dataset.test.labels, runtime.device)
        self.pipeline = BatchPipeline(
            run.model.mean, run.model.std, size, config.augment, runtime.device, runtime.channels_last
        )
        self.cache: features.FeatureCache | None = None
        self.eval_head: nn.Module | None = None  # the head's trained layers, when the cache holds the rest
        self.cache_seconds = 0.0
        if self.split is not None:
            self._build_cache()

        self.steps = steps_per_epoch(len(self.train_split), config.batch_size, self.group.world_size)
        self.optimizer = make_optimizer((p for p in self.model.parameters() if p.requires_grad), config, runtime.device)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)
        self.eval_batch = 1024 if self.cache is not None else (512 if size <= 64 else 128)

    # --- setup ----------------------------------------------------------------------------

    def _record_environment(self, threads: tuple[int, str]) -> None:
        record, runtime = self.run.record, self.runtime
        record.setdefault("resolved", {}).update(runtime.describe())
        if runtime.device.type == "cpu":
            record["resolved"]["threads"] = threads[0]
            if threads[1] != "default":
                record["resolved"]["threads_because"] = threads[1]
        record.setdefault("versions", {})["torch"] = torch.__version__
        hardware = record.setdefault("hardware", {})
        hardware["accelerator"] = runtime.accelerator()
        if runtime.device.type == "cuda":
            hardware["cuda"] = torch.version.cuda

    def _build_model(self) -> nn.Module:
        spec, dataset = self.run.model, self.run.dataset
        model = spec.factory(num_classes=dataset.num_classes, options=self.config.model_options)
        if not isinstance(model, nn.Module):
            raise PluginError(
                f"model {spec.name!r}: its factory returned a {type(model).__name__}, not a torch.nn.Module"
            )
        return model.to(self.runtime.device, memory_format=self.runtime.memory_format)

    def _build_cache(self) -> None:
        assert self.split is not None
        prefix, pipeline, spec = self.split[0], self.pipeline, self.run.model
        # Large inputs in small chunks: AlexNet's prefix ran 8% faster per image in chunks of
        # 64 than of 128 here (its activations then stay in the CPU's caches).
        chunk = 256 if spec.input_size <= 64 else 64
        started = time.perf_counter()
        height, width = self.train_split.image_size
        native = features.native_prefix(self.model, height, spec.input_size) if height == width else None
        if native is not None:  # the resize is folded into the prefix: feed it the stored images
            prefix = native
            pipeline = BatchPipeline(
                spec.mean, spec.std, height, self.config.augment, self.runtime.device, self.runtime.channels_last
            )
            self.run.record["resolved"]["feature_cache"]["resize"] = "folded into the prefix"
        train_flips = (False, True) if self.config.augment.flip else (False,)
        test_flips = (False, True) if self.config.tta else (False,)
        self.cache = features.FeatureCache(
            train=features.compute(prefix, pipeline, self.train_split, train_flips, self.runtime, chunk),
            test=features.compute(prefix, pipeline, self.test_split, test_flips, self.runtime, chunk),
        )
        if self.head_split is not None:  # evaluation: the head's frozen leading layers once per test image
            frozen, self.eval_head = self.head_split
            self.cache.test = features.apply(frozen, self.cache.test, self.runtime, chunk=1024)
            self.run.record["resolved"]["feature_cache"]["test_through"] = [type(m).__name__ for m in frozen]
        self.cache_seconds = time.perf_counter() - started
        self.train_seconds += self.cache_seconds  # part of what training costs

    # --- the run ----------------------------------------------------------------------------

    def train(self) -> RunResult:
        if self.run.resume_checkpoint is not None:
            self._restore(self.run.resume_checkpoint)
        predictions = None
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss, train_acc, lr, images = self._train_epoch(epoch)
            test_loss, test_acc, predictions = self._evaluate()
            seconds = time.perf_counter() - started
            metrics = {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": lr,
                "seconds": seconds,
                "train_images_per_s": images / max(self._last_train_seconds, 1e-9),
            }
            self.history.append(metrics)
            self.run.emit("on_epoch_end", epoch=epoch, metrics=metrics)
            stop: RunInterrupted | None = None
            if self.config.checkpoint and self.run.is_main:
                path = checkpoints.save(self.run.checkpoint_dir, epoch, self._state())
                try:
                    self.run.emit("on_checkpoint", epoch=epoch, path=str(path))  # raises when a stop was asked
                except RunInterrupted as err:
                    stop = err
            # Distributed: every process waits here for rank 0's checkpoint (written before any
            # collective, so a peer that died keeps it), and a signal any process got stops all.
            self.group.agree_on_stop(self.run)
            if stop is not None or self.run.stop_requested:
                raise stop or self.group.interrupted(self.run)
            if 0 < self.max_steps <= self.global_step:
                break
        if predictions is None:  # resumed after the last epoch: nothing trained, still report
            *_, predictions = self._evaluate()
        dataset = self.run.dataset
        k = self.config.prediction_samples
        self.run.emit(
            "on_predictions",
            epoch=len(self.history),
            labels=dataset.test.labels,
            predictions=predictions,
            images=dataset.test.images[:k],
        )
        extra: dict[str, Any] = {
            "steps": self.global_step,
            "steps_per_epoch": self.steps,
            "images_trained": self.images_trained,
        }
        if self.cache is not None:
            extra["feature_cache_seconds"] = self.cache_seconds
            extra["feature_cache_bytes"] = self.cache.nbytes
        return RunResult(final=dict(self.history[-1]), train_seconds=self.train_seconds, extra=extra)

    def _batch(self, draw: EpochDraw) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is None:
            return self.pipeline.train_batch(self.train_split, draw)
        variant = draw.flip.long() if self.cache.train.shape[0] > 1 else 0
        return self.cache.train[variant, draw.order], self.train_split.labels[draw.order]

    def _batches(self, draw: EpochDraw) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, int]]:
        """``(step, inputs, labels, global batch size)`` for each step of the epoch: this
        process's block of each global batch.

        When the head's frozen layers are split off (``head_split``), they run here, in
        training mode (dropout live) and outside autograd, on HEAD_BLOCK steps' batches at
        once: each image gets its own dropout masks as before, and the frozen matrix
        product runs at a quarter of the calls, where batch 64 leaves it short of the CPU's
        peak (13.3 ms for 64 rows of AlexNet's 9216→4096 layer, 11.4 ms per 64 in 256)."""
        batch_size, n = self.config.batch_size, len(self.train_split)
        block = HEAD_BLOCK if self.head_split is not None else 1
        for first in range(1, self.steps + 1, block):
            steps = range(first, min(self.steps, first + block - 1) + 1)
            batches = []
            for step in steps:
                start, stop = (step - 1) * batch_size, min(n, step * batch_size)
                x, y = self._batch(draw.batch(*self.group.shard(start, stop)))
                batches.append((step, x, y, stop - start))
            if self.head_split is not None:
                with torch.no_grad(), self.runtime.autocast():
                    ahead = self.head_split[0](torch.cat([x for _, x, _, _ in batches]))
                ahead = ahead.split([len(x) for _, x, _, _ in batches])
                batches = [(step, a, y, size) for a, (step, _, y, size) in zip(ahead, batches, strict=True)]
            yield from batches

    def _train_epoch(self, epoch: int) -> tuple[float, float, float, int]:
        config, runtime = self.config, self.runtime
        n = len(self.train_split)
        augment = (
            config.augment if self.cache is None else Augment(crop_padding=0, flip=config.augment.flip, brightness=0)
        )
        draw = draw_epoch(n, augment, epoch_generator(config.seed, epoch), runtime.device)
        self.group.seed_epoch(config.seed, epoch)  # distributed: dropout masks differ per process
        self.net.train()
        if self.head_split is not None:
            self.head_split[0].train()  # its dropout is live in training (see _batches)
        loss_sum = torch.zeros((), device=runtime.device)
        correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
        seen, lr = 0, self.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        for step, x, y, global_size in self._batches(draw):
            with runtime.autocast():
                logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(self.group.weight_loss(loss, len(y), global_size)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.global_step += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            self.images_trained += len(y)
            done = step == self.steps or 0 < self.max_steps <= self.global_step
            if step % PROGRESS_EVERY == 0 or done:
                value = self.group.mean(loss.detach())
                self._check_finite(value, epoch, step)
                self.run.emit("on_train_progress", epoch=epoch, step=step, steps=self.steps, metrics={"loss": value})
            if done:
                break
        loss_total, correct_total, seen = self.group.sum(loss_sum, correct, seen)  # over processes
        train_loss = loss_total / seen
        self._check_finite(train_loss, epoch, self.steps)
        self.group.average_buffers(self.model)  # batch-norm statistics: the same on every process
        self._last_train_seconds = time.perf_counter() - started
        self.train_seconds += self._last_train_seconds
        return train_loss, correct_total / seen, lr, int(seen)

    def _check_finite(self, value: float, epoch: int, step: int) -> None:
        if not math.isfinite(value):
            kept = f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the training loss became {value} in epoch {epoch}, step {step}; {kept}; "
                "try a lower --lr or --precision fp32"
            )

    @torch.inference_mode()
    def _evaluate(self) -> tuple[float, float, np.ndarray]:
        """Test loss, accuracy and every test prediction (eval mode, TTA when configured)."""
        self.net.eval()
        split, n = self.test_split, len(self.test_split)
        first, last = self.group.shard(0, n)  # each process evaluates its block of the split
        loss_sum = torch.zeros((), device=self.runtime.device)
        predictions = [torch.zeros(0, dtype=torch.int64, device=self.runtime.device)]
        for start in range(first, last, self.eval_batch):
            index = torch.arange(start, min(last, start + self.eval_batch), device=self.runtime.device)
            logits = self._logits(index, flip=False)
            if self.config.tta:
                logits = (logits + self._logits(index, flip=True)) / 2
            y = split.labels[index]
            loss_sum += F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing, reduction="sum")
            predictions.append(logits.argmax(1))
        predicted = self.group.gather(torch.cat(predictions), n)
        (loss_total,) = self.group.sum(loss_sum)
        accuracy = (predicted == split.labels).double().mean().item()
        return loss_total / n, accuracy, predicted.cpu().numpy()

    def _logits(self, index: torch.Tensor, flip: bool) -> torch.Tensor:
        net = self.net
        if self.cache is not None:
            x = self.cache.test[int(flip), index]
            net = self.eval_head if self.eval_head is not None else net
        else:
            x = self.pipeline.eval_batch(self.test_split, index, flip=flip)
        with self.runtime.autocast():
            return net(x).float()

    # --- checkpoints --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": [dict(m) for m in self.history],
            "train_seconds": self.train_seconds,
            "global_step": self.global_step,
            "seed": self.config.seed,
        }

    def _restore(self, path: Any) -> None:
        state = checkpoints.load(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0][:160]
            raise WeightsError(f"checkpoint {path} does not fit this model ({first})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"])
        self.history = [dict(m) for m in state["history"]]
        self.train_seconds = float(state["train_seconds"])
        self.global_step = int(state["global_step"])
        self.start_epoch = int(state["epoch"]) + 1


def _summary(model: nn.Module, params: dict[str, int]) -> str:
    return f"{model}\n\nparameters: {params['total']:,} total, {params['trainable']:,} trainable"
