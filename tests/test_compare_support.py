"""Real runs for the comparison and TensorBoard tests, made by the fake numpy trainer.

Two fake model plugins imitate the study's torch-cnn and keras-cnn: each registers the
numpy trainer for its own framework ("torch", "keras") and a ``study`` recipe; their
recipes differ in augmentation (and learning rate), as the study's do. A third,
``broken``, fails after its first epoch. The TensorBoard plugin writes each run's events,
as it does when installed. No torch or TensorFlow is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakes

import cifarfw_tensorboard.plugin
from cifarfw import hookimpl, runner
from cifarfw.plugins import PluginHost
from cifarfw.specs import ModelSpec, RunResult, TrainerSpec

SMALL_DATA = {"train_size": 200, "test_size": 100}
STUDY_AUGMENT = {"crop_padding": 4, "flip": True, "brightness": 0.2}
NO_AUGMENT = {"crop_padding": 0, "flip": False, "brightness": 0.0}


class FailingTrainer:
    """Reports one epoch, then fails as a real trainer might."""

    def fit(self, run: Any) -> RunResult:
        run.record["resolved"] = {"precision": "fp32", "device": "cpu"}
        run.emit("on_model_built", params={"total": 10, "trainable": 10}, summary="broken", graph=None)
        metrics = {"train_loss": 2.3, "train_acc": 0.1, "test_loss": 2.3, "test_acc": 0.1, "lr": 0.01, "seconds": 0.1}
        run.emit("on_epoch_end", epoch=1, metrics=metrics)
        raise RuntimeError("boom: the fake trainer failed in epoch 2")


class StudyLikePlugin:
    """A model named like a study plugin, trained by the numpy trainer under ``framework``."""

    def __init__(self, name: str, framework: str, recipe: dict[str, Any], trainer: type = fakes.NumpyTrainer) -> None:
        self.name, self.framework, self.recipe, self.trainer = name, framework, recipe, trainer

    @hookimpl
    def register_trainers(self, register: Any) -> None:
        register(TrainerSpec(f"fake-{self.framework}", self.framework, self.trainer, description="fake trainer"))

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(
            ModelSpec(
                self.name,
                self.framework,
                fakes._factory,
                recipes={"study": self.recipe},
                description=f"softmax regression standing in for {self.name}",
            )
        )


def _recipe(lr: float, augment: dict[str, Any]) -> dict[str, Any]:
    return {"epochs": 2, "batch_size": 50, "lr": lr, "dataset": "synthetic", "augment": augment}


TORCH_LIKE = StudyLikePlugin("torch-cnn", "torch", _recipe(0.05, STUDY_AUGMENT))
KERAS_LIKE = StudyLikePlugin("keras-cnn", "keras", _recipe(0.02, NO_AUGMENT))
BROKEN = StudyLikePlugin("broken-cnn", "broken", _recipe(0.01, NO_AUGMENT), FailingTrainer)


def make_host() -> PluginHost:
    host = PluginHost(load_entry_points=False)
    host.add(cifarfw_tensorboard.plugin, "tensorboard")
    host.add(TORCH_LIKE, "torch-cnn")
    host.add(KERAS_LIKE, "keras-cnn")
    host.add(BROKEN, "broken-cnn")
    return host


def make_run(host: PluginHost, root: Path, plugin: str, seed: int = 0, **flags: Any) -> Path:
    """One finished run of ``plugin`` under ``root`` (tiny synthetic data, 2 epochs, 8 sample
    predictions: the figures are most of a fake run's time)."""
    values = {"seed": seed, "runs_root": str(root), "dataset_options": SMALL_DATA, "prediction_samples": 8, **flags}
    plugin_name, spec, config = runner.resolve(host, plugin, None, {}, values)
    return runner.execute(host, plugin_name, spec, config)


def make_failed_run(host: PluginHost, root: Path) -> Path:
    """A run whose trainer fails after epoch 1; returns its folder (status 'failed')."""
    before = set(root.iterdir()) if root.exists() else set()
    try:
        make_run(host, root, "broken-cnn")
    except RuntimeError:
        pass
    else:  # pragma: no cover - the fake always fails
        raise AssertionError("the broken trainer did not fail")
    (new,) = [p for p in root.iterdir() if p not in before and p.is_dir()]
    return new


def make_study_runs(root: Path, seeds: tuple[int, ...] = (0, 1)) -> list[Path]:
    """torch-cnn and keras-cnn stand-ins, each with ``seeds``: 2 configs x len(seeds) runs."""
    host = make_host()
    dirs = []
    for plugin in ("torch-cnn", "keras-cnn"):
        for seed in seeds:
            dirs.append(make_run(host, root, plugin, seed))
    return dirs
