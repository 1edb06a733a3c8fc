"""A fake framework for the core's tests: a numpy softmax-regression model and its trainer.

Real enough to learn the synthetic dataset (the loss falls), light enough that the core's
tests need neither torch nor TensorFlow.
"""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np

from cifarfw import hookimpl
from cifarfw.runs import atomic_write
from cifarfw.specs import ModelSpec, Option, RunResult, TrainerSpec


class SoftmaxModel:
    def __init__(self, num_classes: int, features: int) -> None:
        self.w = np.zeros((features, num_classes))
        self.b = np.zeros(num_classes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b


def _features(images: np.ndarray, mean, std) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    x = (x - np.asarray(mean)) / np.asarray(std)
    return x[:, ::4, ::4, :].reshape(len(images), -1)  # 8x8x3 = 192 features


def _loss_acc(model: SoftmaxModel, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    z = model.logits(x)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(1) == y).mean()), p


class NumpyTrainer:
    """Trains with plain SGD; checkpoints each epoch (npz) and resumes bit-identically:
    each epoch's shuffle comes from (seed, epoch), never from leftover global state."""

    def fit(self, run):  # type: ignore[no-untyped-def]
        cfg, spec, ds = run.config, run.model, run.dataset
        model = spec.factory(num_classes=ds.num_classes, options=cfg.model_options)
        xtr, ytr = _features(ds.train.images, spec.mean, spec.std), ds.train.labels
        xte, yte = _features(ds.test.images, spec.mean, spec.std), ds.test.labels
        model.w = np.random.default_rng(cfg.seed).normal(0, 0.01, (xtr.shape[1], ds.num_classes))
        first_epoch, train_seconds = 1, 0.0
        if run.resume_checkpoint is not None:
            try:
                state = np.load(run.resume_checkpoint)
                state["w"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                from cifarfw.errors import WeightsError

                raise WeightsError(
                    f"checkpoint {run.resume_checkpoint} cannot be read ({type(err).__name__})"
                ) from None
            model.w, model.b = state["w"], state["b"]
            first_epoch, train_seconds = int(state["epoch"]) + 1, float(state["train_seconds"])
        total = model.w.size + model.b.size
        run.record["resolved"] = {"precision": "fp64", "device": "cpu"}
        run.emit(
            "on_model_built", params={"total": total, "trainable": total}, summary="softmax regression", graph=None
        )
        metrics = {}
        for epoch in range(first_epoch, cfg.epochs + 1):
            start = time.perf_counter()
            order = np.random.default_rng((cfg.seed, epoch)).permutation(len(ytr))
            steps = max(1, len(order) // cfg.batch_size)
            for step in range(steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                _, _, p = _loss_acc(model, xtr[idx], ytr[idx])
                p[np.arange(len(idx)), ytr[idx]] -= 1
                model.w -= cfg.lr * xtr[idx].T @ p / len(idx)
                model.b -= cfg.lr * p.mean(axis=0)
                run.emit("on_train_progress", epoch=epoch, step=step + 1, steps=steps, metrics={})
            train_seconds += time.perf_counter() - start
            train_loss, train_acc, _ = _loss_acc(model, xtr, ytr)
            if not np.isfinite(train_loss):
                from cifarfw.errors import NonFiniteLossError

                raise NonFiniteLossError(f"loss became {train_loss} in epoch {epoch}")
            test_loss, test_acc, p = _loss_acc(model, xte, yte)
            metrics = {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": cfg.lr,
                "seconds": time.perf_counter() - start,
            }
            run.emit("on_epoch_end", epoch=epoch, metrics=metrics)
            if cfg.checkpoint:
                path = run.checkpoint_dir / f"epoch{epoch}.npz"
                buffer = io.BytesIO()
                np.savez(buffer, w=model.w, b=model.b, epoch=epoch, train_seconds=train_seconds)
                atomic_write(path, buffer.getvalue())
                run.emit("on_checkpoint", epoch=epoch, path=str(path))  # raises when a stop was asked
        if not metrics:  # resumed after the last epoch: report the stored state
            test_loss, test_acc, p = _loss_acc(model, xte, yte)
            train_loss, train_acc, _ = _loss_acc(model, xtr, ytr)
            metrics = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                       "test_acc": test_acc, "lr": cfg.lr, "seconds": 0.0}  # fmt: skip
        _, _, p = _loss_acc(model, xte, yte)
        k = cfg.prediction_samples
        run.emit("on_predictions", epoch=cfg.epochs, labels=yte, predictions=p.argmax(1), images=ds.test.images[:k])
        return RunResult(final=metrics, train_seconds=train_seconds, extra={"weights": model.w.sum()})


def _factory(num_classes: int, options: dict) -> SoftmaxModel:
    return SoftmaxModel(num_classes, 192)


class FakeModelPlugin:
    """Registers the 'numpy' trainer and the 'softmax' model (plugin name 'fake')."""

    @hookimpl
    def register_trainers(self, register):  # type: ignore[no-untyped-def]
        register(
            TrainerSpec(
                "numpy",
                "numpy",
                NumpyTrainer,
                description="fake numpy trainer",
                optimizers=("adam", "adamw", "sgd"),  # its vocabulary: config validation asks it
                schedules=("constant", "step", "cosine", "onecycle"),
            )
        )

    @hookimpl
    def register_models(self, register):  # type: ignore[no-untyped-def]
        register(
            ModelSpec(
                "softmax",
                "numpy",
                _factory,
                recipes={"quick": {"epochs": 3, "batch_size": 50, "lr": 0.05, "dataset": "synthetic"}},
                options=(Option("width", "a fake option", default="narrow", choices=("narrow", "wide")),),
                description="softmax regression on 8x8 pixels",
            )
        )


FAKE_PLUGIN = FakeModelPlugin()
