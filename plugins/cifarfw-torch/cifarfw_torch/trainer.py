"""The torch trainer: trains any ``torch.nn.Module`` a model plugin builds.

One run, in order: resolve device, precision and CPU threads (:mod:`cifarfw_torch.runtime`),
seed torch/numpy/Python, build the model, choose its batch source once (a
:class:`~cifarfw_torch.pipeline.BatchSource`: the live augmented pipeline of
:mod:`cifarfw_torch.pipeline`, or the frozen-prefix feature cache of
:mod:`cifarfw_torch.features` when the model offers one), emit ``on_model_built``
(parameter counts, a text summary, the traced graph), prepare the source (the cache build),
then per epoch: train, evaluate, emit ``on_epoch_end``, checkpoint (and emit
``on_checkpoint``). At the end it emits ``on_predictions`` for the whole test split.

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
on with the next epoch, with the CPU thread count the run started with (run.json's
``resolved.threads``); each epoch's shuffle and augmentation come from a generator seeded
by (seed, epoch), so the data order is the one an uninterrupted run sees.

Distributed runs (torchrun, ``--nproc-per-node``): :mod:`cifarfw_torch.distributed` wraps
the model in DistributedDataParallel; each process trains on its block of every global
batch, metrics are reduced over processes and only rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarfw.errors import NonFiniteLossError, PluginError, RunInterrupted, UsageError, WeightsError
from cifarfw.runs import Run
from cifarfw.specs import RunResult
from cifarfw_torch import checkpoints, cost, distributed, features
from cifarfw_torch.graph import try_model_graph
from cifarfw_torch.optim import make_optimizer, make_scheduler
from cifarfw_torch.pipeline import BatchSource, LivePipeline
from cifarfw_torch.pipeline import steps_per_epoch as steps_per_epoch  # the trainer's public name for it
from cifarfw_torch.runtime import Runtime, cpu_threads, deterministic_mode, plan_threads, resolve, seed_everything

PROGRESS_EVERY = 10  # steps between on_train_progress events (and NaN checks)
HEAD_BLOCK = 4  # training steps whose batches go through a head's frozen layers together


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": m}`` counted from the model itself."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


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
        # Read before the record is rewritten: a resume keeps the thread count it started with.
        recorded = run.record.get("resolved", {}).get("threads") if run.resume_checkpoint else None
        chosen = plan_threads(run.config.deterministic, recorded) if runtime.device.type == "cpu" else None
        with (
            distributed.process_group(run, runtime.device) as group,
            deterministic_mode(run.config.deterministic, runtime.device),
            cpu_threads(runtime.device, chosen) as threads,
        ):
            return _Fit(run, runtime, self.max_steps, threads, group).train()


class _Fit:
    """The state of one training run: built in ``__init__``, then :meth:`train`."""

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
        self.source = self._choose_source()
        run.record["resolved"].update(self.source.describe())
        trained = self.group.wrap(self.source.trained)  # DistributedDataParallel in a distributed run
        self.net: nn.Module = torch.compile(trained) if config.compile else trained
        if config.compile:
            run.record["resolved"]["compile"] = True
        self.eval_net = self.source.evaluated if self.source.evaluated is not None else self.net
        self._emit_model_built()
        self.train_seconds += self.source.prepare()  # a cache build is part of what training costs
        run.record["resolved"].update(self.source.describe())

        self.steps = self.source.steps
        self.optimizer = make_optimizer((p for p in self.model.parameters() if p.requires_grad), config, runtime.device)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)

    # --- setup ----------------------------------------------------------------------------

    def _record_environment(self, threads: tuple[int, str]) -> None:
        record, runtime = self.run.record, self.runtime
        record.setdefault("resolved", {}).update(runtime.describe())
        record["resolved"].pop("threads_because", None)  # a resumed record of an older version
        if runtime.device.type == "cpu":
            count, why = threads
            record["resolved"]["threads"] = count
            record.setdefault("notes", []).append(f"CPU threads: {why}")
            # Said on the console too when it is not the plain choice: a resume's count, or fewer threads for load.
            if self.run.is_main and why.startswith(("resuming", "using")):
                print(f"threads: {why}", flush=True)
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

    def _choose_source(self) -> BatchSource:
        """The feature cache when it is on and the model offers a frozen prefix, else the live pipeline."""
        split = features.frozen_split(self.model) if self.config.feature_cache else None
        if split is None:
            return LivePipeline(self.model, self.run, self.runtime, self.group)
        return features.FeatureCache(self.model, split, self.run, self.runtime, self.group, HEAD_BLOCK)

    def _emit_model_built(self) -> None:
        run, size = self.run, self.run.model.input_size
        example = torch.zeros(1, 3, size, size, device=self.runtime.device)
        graph, why = try_model_graph(self.model, example.contiguous(memory_format=self.runtime.memory_format))
        if why:
            run.record.setdefault("notes", []).append(why)
        params = count_parameters(self.model)
        if params["trainable"] == 0:
            raise UsageError(f"model {run.model.name!r} has no trainable parameters with these options")
        run.emit("on_model_built", params=params, summary=_summary(self.model, params), graph=graph)

    # --- the run ----------------------------------------------------------------------------

    def train(self) -> RunResult:
        if self.run.resume_checkpoint is not None:
            self._restore(self.run.resume_checkpoint)
        predictions = None
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss, train_acc, lr, images = self._train_epoch(epoch)
            test_loss, test_acc, predictions = self._evaluate()
            metrics = {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": lr,
                "seconds": time.perf_counter() - started,
                "train_images_per_s": images / max(self._last_train_seconds, 1e-9),
            }
            self.history.append(metrics)
            self.run.emit("on_epoch_end", epoch=epoch, metrics=metrics)
            self._checkpoint(epoch)
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
            **self.source.extra(),
        }
        cost.record(self.run, self.model, self._image_logits, self.runtime, self.source)  # run.json's cost (issue 17)
        return RunResult(final=dict(self.history[-1]), train_seconds=self.train_seconds, extra=extra)

    def _train_epoch(self, epoch: int) -> tuple[float, float, float, int]:
        config, runtime = self.config, self.runtime
        self.group.seed_epoch(config.seed, epoch)  # distributed: dropout masks differ per process
        self.net.train()
        batches = self.source.train_batches(epoch)
        loss_sum = torch.zeros((), device=runtime.device)
        correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
        seen, lr = 0, self.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        for step, x, y, global_size in batches:
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
                progress = {"loss": value, "acc": correct.item() / seen, "lr": lr}  # running accuracy, this step's lr
                self.run.emit("on_train_progress", epoch=epoch, step=step, steps=self.steps, metrics=progress)
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
        """Test loss, accuracy and every test prediction (eval mode; with ``--tta`` the
        logits of each image and its mirror, averaged)."""
        self.net.eval()
        labels, n = self.source.test.labels, len(self.source.test)
        first, last = self.group.shard(0, n)  # each process evaluates its block of the split
        loss_sum = torch.zeros((), device=self.runtime.device)
        predictions = [torch.zeros(0, dtype=torch.int64, device=self.runtime.device)]
        for index, views in self.source.eval_batches(first, last):
            logits = [self._logits(x) for x in views]
            mean = logits[0] if len(logits) == 1 else (logits[0] + logits[1]) / 2
            loss_sum += F.cross_entropy(
                mean, labels[index], label_smoothing=self.config.label_smoothing, reduction="sum"
            )
            predictions.append(mean.argmax(1))
        predicted = self.group.gather(torch.cat(predictions), n)
        (loss_total,) = self.group.sum(loss_sum)
        accuracy = (predicted == labels).double().mean().item()
        return loss_total / n, accuracy, predicted.cpu().numpy()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            return self.eval_net(x).float()

    def _image_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The whole model's eval forward on images (run.json's cost): the compiled module when
        it is the whole model; never the head a feature cache trains, nor the DDP wrapper
        (rank 0 measures alone, and DDP's forward may wait for the other ranks)."""
        whole = self.source.trained is self.model and self.group.world_size == 1
        with self.runtime.autocast():
            return (self.net if whole else self.model)(x).float()

    # --- checkpoints --------------------------------------------------------------------------

    def _checkpoint(self, epoch: int) -> None:
        """Write epoch ``epoch``'s checkpoint (rank 0); stop here when a signal asked to."""
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
