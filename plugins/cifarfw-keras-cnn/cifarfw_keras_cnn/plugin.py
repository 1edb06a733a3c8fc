"""The ``keras-cnn`` plugin: the study's Keras CNN and its recipes.

Recipes:
  study  the study's: 20 epochs, batch 32, Adam (Keras defaults, lr 0.001), no augmentation,
         pixels scaled to 0-1 only (x/255), as its pipeline did.
  fair   the torch-cnn study recipe's augmentation, epochs and batch size (random crop with
         4 px padding, flip, brightness ±20%; 20 epochs, batch 64) with Adam lr 0.001, so the
         two frameworks are compared on equal terms.
  fast   the study's test accuracy (70.92%) in the least time on a CPU: 4 epochs, batch 64,
         one-cycle Adam up to lr 0.004, flip and 2 px crops, flip test-time augmentation.

This module imports no TensorFlow: the factory does, when a run needs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec

NO_AUGMENTATION = {"crop_padding": 0, "flip": False, "brightness": 0.0}

RECIPES: dict[str, dict[str, Any]] = {
    "study": {
        "epochs": 20,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 0.001,
        "schedule": "constant",
        "augment": NO_AUGMENTATION,
    },
    "fair": {
        "epochs": 20,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 0.001,
        "schedule": "constant",
        "augment": {"crop_padding": 4, "flip": True, "brightness": 0.2},
    },
    "fast": {
        "epochs": 4,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 0.004,
        "schedule": "onecycle",
        "warmup_fraction": 0.25,
        "augment": {"crop_padding": 2, "flip": True, "brightness": 0.0},
        "tta": True,
    },
}


def _factory(num_classes: int, options: dict[str, Any]) -> Any:
    from cifarfw_keras_cnn.model import build

    return build(num_classes, options)


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(
        ModelSpec(
            name="keras-cnn",
            framework="keras",
            factory=_factory,
            input_size=32,
            mean=(0.0, 0.0, 0.0),  # the study only scaled pixels to 0-1
            std=(1.0, 1.0, 1.0),
            recipes=RECIPES,
            default_recipe="study",
            description="the study's Keras CNN: 3 conv + 2 dense layers, 126,730 parameters",
        )
    )
