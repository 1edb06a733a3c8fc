"""RMSprop, added to the keras trainer alone: its vocabulary (plugin.OPTIMIZERS) and its
optimizer(), with no change to the core (issue 14: the trainer owns its optimizer list)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cifarfw.config
from cifarfw.config import RunConfig
from cifarfw.testing import run_cli

pytest.importorskip("cifarfw_keras._tf")

from cifarfw_keras import plugin as keras_plugin
from cifarfw_keras import trainer
from cifarfw_keras._tf import keras


def test_rmsprop_is_declared_and_built():
    assert "rmsprop" in keras_plugin.OPTIMIZERS
    opt = trainer.optimizer(RunConfig(optimizer="rmsprop", lr=0.002, weight_decay=0.01), steps=10)
    assert isinstance(opt, keras.optimizers.RMSprop)
    assert float(opt.learning_rate) == pytest.approx(0.002)
    assert opt.weight_decay == pytest.approx(0.01)
    assert float(opt.momentum) == 0.0  # Keras's default, not --momentum's SGD default of 0.9


def test_keras_cnn_trains_with_rmsprop_through_the_trainer():
    """The study's CNN, compiled by the trainer with rmsprop, fits a small separable set."""
    from cifarfw_keras_cnn.model import build

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 256)
    images = rng.normal(0.0, 0.1, (256, 32, 32, 3)).astype("float32")
    images[np.arange(256), labels, :, labels % 3] += 1.0  # a class-dependent row: learnable
    onehot = np.eye(10, dtype="float32")[labels]
    keras.utils.set_random_seed(0)
    model = build(10)
    trainer.compile_model(model, RunConfig(optimizer="rmsprop", lr=0.001, epochs=6), steps=8, probabilities=True)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    history = model.fit(images, onehot, batch_size=32, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(
    hasattr(cifarfw.config, "OPTIMIZERS"),
    reason="the core still validates --optimizer against its own list (issue 14: the trainer's list decides)",
)
def test_keras_cnn_rmsprop_through_the_cli(tmp_path):
    code, _, err = run_cli(
        "run", "--plugin", "keras-cnn", "--dataset", "synthetic", "--set", "dataset_options.train_size=200",
        "--set", "dataset_options.test_size=50", "--epochs", "1", "--batch-size", "50", "--optimizer", "rmsprop",
        "--set", "prediction_samples=0", "--set", "checkpoint=false", "--runs-root", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["optimizer"] == "rmsprop" and record["status"] == "finished"
    assert np.isfinite(record["final"]["train_loss"])
