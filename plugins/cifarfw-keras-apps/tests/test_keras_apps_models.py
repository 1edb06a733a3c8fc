"""A sample of 10 keras.applications, one a family: each builds at its input side with the
library's parameter count, trains two steps with a finite, falling loss, and passes the
contract kit's checks; one trains through the Keras trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarfw.plugins import PluginHost
from cifarfw.testing import PluginUnderTest, check_forward, check_params, check_recipes, check_trainer_run
from cifarfw_keras_apps import plugin

# Parameter counts of keras.applications.<Constructor>(weights=None, include_top=True,
# classes=10, input_shape=(side, side, 3)) as Keras 3.15 builds them (non-trainable BN
# statistics included, as model.count_params() counts).
SAMPLE = {
    "mobilenet": 3_239_114,
    "mobilenetv2": 2_270_794,
    "mobilenetv3small": 1_540_218,
    "efficientnetb0": 4_062_381,
    "efficientnetv2b0": 5_932_122,
    "densenet121": 7_047_754,
    "resnet50v2": 23_585_290,
    "vgg16": 33_638_218,
    "convnexttiny": 27_827_818,
    "xception": 20_881_970,  # 71x71: the trainer resizes CIFAR's 32x32 batches
}


@pytest.fixture(scope="module")
def adapter():
    from cifarfw_keras.kit import KerasAdapter

    return KerasAdapter()


def batch(spec, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images at the model's side, normalised with its mean/std as the trainer does."""
    from cifarfw.data import synthetic

    split = synthetic.generate(n, 0, size=spec.input_size)
    x = (split.images.astype(np.float32) / 255.0 - np.float32(spec.mean)) / np.float32(spec.std)
    return x.astype(np.float32), split.labels


def two_steps(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The training-mode loss on a fixed batch before and after two Adam steps on it (eager:
    tracing the train step would cost more than the two steps)."""
    from cifarfw_keras._tf import keras

    out = np.asarray(model(x[:2], training=False))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not np.allclose(out.sum(axis=1), 1, atol=1e-3))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, run_eagerly=True)
    before = float(loss(y, model(x, training=True)))
    for _ in range(2):
        model.train_on_batch(x, y)
    return before, float(loss(y, model(x, training=True)))


@pytest.mark.parametrize("name", sorted(SAMPLE))
def test_builds_counts_and_learns(name, adapter):
    spec = plugin.spec(name)
    model = check_forward(adapter, spec, {}, batch=2)  # the kit: builds, (2, 10) finite outputs
    assert check_params(adapter, model, spec, {"total": SAMPLE[name]})[0] == SAMPLE[name]
    x, y = batch(spec)
    before, after = two_steps(model, x, y)
    assert math.isfinite(before) and math.isfinite(after) and after < before, (before, after)


def test_the_keras_trainer_trains_one(tmp_path, monkeypatch):
    """Through the kit's real run: the registered Keras trainer, events, run.json, predictions."""
    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    host = PluginHost()
    spec = plugin.spec("vgg16")
    put = PluginUnderTest(host, "keras-apps", plugin, [spec])
    assert check_recipes(put, spec) == ["zoo"]
    record = check_trainer_run(
        put, spec, runs_root=tmp_path, train_size=20, test_size=10, batch_size=10, expected_total_params=SAMPLE["vgg16"]
    )
    assert record["model"] == "keras/vgg16" and record["recipe"] == "zoo"
