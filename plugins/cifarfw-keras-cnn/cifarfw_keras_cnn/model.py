"""The study's Keras CNN, layer for layer.

Conv2D(32, 3, relu) -> MaxPool(2) -> Conv2D(64, 3, relu) -> MaxPool -> Conv2D(128, 3, relu)
-> MaxPool -> Flatten -> Dense(64, relu) -> Dense(10, softmax), 'valid' padding, 32x32x3
input: 126,730 parameters (the study printed 224,842, which this code cannot give).
"""

from __future__ import annotations

from typing import Any

PARAMETERS = 126_730


def build(num_classes: int = 10, options: dict[str, Any] | None = None) -> Any:
    """The model, uncompiled (the keras trainer compiles it as the run's config says)."""
    from cifarfw_keras._tf import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="keras_cnn",
    )
