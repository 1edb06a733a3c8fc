"""The ``torch-cnn`` plugin: the study's PyTorch CNN, trained by the torch trainer.

This module imports no torch (``cifarfw --help`` loads every plugin): the factory
imports :mod:`cifarfw_torch_cnn.model` only when a run builds the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec

# The study's settings: 20 epochs, batch 64, Adam, lr 0.01, constant rate; augmentation
# random crop (padding 4), horizontal flip, brightness ±20%. Precision auto = bf16 autocast
# on CPUs with native bf16, AMP on CUDA, else fp32.
STUDY_RECIPE: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 0.01,
    "schedule": "constant",
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "augment": {"crop_padding": 4, "flip": True, "brightness": 0.2},
    "precision": "auto",
}


def build_model(num_classes: int, options: dict[str, Any]) -> Any:
    from cifarfw_torch_cnn.model import StudyCNN

    return StudyCNN(num_classes)


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(
        ModelSpec(
            name="torch-cnn",
            framework="torch",
            factory=build_model,
            input_size=32,
            recipes={
                "study": STUDY_RECIPE,
                # The study's accuracy soonest on a CPU (issue 9, measured with bench/time_to_accuracy.py):
                # one-cycle Adam at batch 256, label smoothing, lighter augmentation (2 px crops, flips,
                # no brightness: this small, dropout-regularised net underfits), flip TTA, bf16 on CPUs
                # that have it. Seed 0 crossed 80.64% at epoch 12 and ended at 81.20%; `--epochs 28` for more.
                "fast": {
                    "epochs": 14,
                    "batch_size": 256,
                    "optimizer": "adam",
                    "lr": 0.005,
                    "schedule": "onecycle",
                    "warmup_fraction": 0.25,
                    "weight_decay": 0.0,
                    "label_smoothing": 0.1,
                    "augment": {"crop_padding": 2, "flip": True, "brightness": 0.0},
                    "tta": True,
                    "precision": "auto",
                },
            },
            default_recipe="study",
            description="the study's PyTorch CNN: 3 conv+BN+pool blocks, FC 2048→120→84→10 (350,366 parameters)",
        )
    )
