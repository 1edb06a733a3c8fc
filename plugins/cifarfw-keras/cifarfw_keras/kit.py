"""The test kit's adapter for Keras models (``cifarfw.testing``'s forward and learns checks).

The keras plugin declares it with ``TrainerSpec(adapter=...)``; the kit asks for it only
when it checks a Keras model, so TensorFlow is imported then, the way the trainer imports
it (quiet logs, torch's triton first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cifarfw.specs import ModelSpec
from cifarfw.testing import ContractError
from cifarfw_keras._tf import keras


class KerasAdapter:
    """keras.Model models: NHWC float arrays; outputs may be logits or probabilities."""

    def build(self, spec: ModelSpec, num_classes: int, options: Mapping[str, Any]) -> keras.Model:
        model = spec.factory(num_classes=num_classes, options=dict(options))
        if not isinstance(model, keras.Model):
            raise ContractError(f"model {spec.name!r}: the factory returned {type(model).__name__}, not a keras.Model")
        return model

    def forward(self, model: keras.Model, images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False), dtype=np.float32)

    def count_params(self, model: keras.Model) -> tuple[int, int]:
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return int(model.count_params()), trainable

    def loss_before_after(
        self, model: keras.Model, images: np.ndarray, labels: np.ndarray, steps: int
    ) -> tuple[float, float]:
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
