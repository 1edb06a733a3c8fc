"""The ``alexnet`` plugin: the study's AlexNet fine-tuner, trained by the torch trainer.

This module imports no torch (``cifarfw --help`` loads every plugin): the factory imports
:mod:`cifarfw_alexnet.model` only when a run builds the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Option

FREEZE_CHOICES = ("study", "features", "none")  # == cifarfw_alexnet.model.FREEZE_POLICIES

# The study's recipe: 10 epochs, batch 64, Adam, lr 0.01, flip + crop + brightness 0.2.
# The study cropped 224x224 with padding 16 *after* resizing to 224; the torch trainer crops
# at 32x32 before resizing, where the same shift is 16 * 32 / 224 ≈ 2.3 pixels: padding 2.
# With the feature cache on, the trainer keeps only the augmentations the cache can hold
# (flips); run.json says which, and --no-feature-cache applies all of them live.
STUDY_RECIPE: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 0.01,
    "schedule": "constant",
    "augment": {"crop_padding": 2, "flip": True, "brightness": 0.2},
}


def build_model(num_classes: int, options: dict[str, Any]) -> Any:
    from cifarfw_alexnet.model import build

    return build(num_classes, options)


def validate_options(options: dict[str, Any]) -> None:
    """Before any run folder exists: a --weights PATH must be a readable file (its content is
    checked when the model is built)."""
    import os

    from cifarfw.errors import WeightsError

    weights = options.get("weights") or "imagenet"
    if weights in ("imagenet", "none"):
        return
    if not os.path.isfile(weights):
        raise WeightsError(
            f"weights file {weights} does not exist; --weights takes imagenet, none or the path of an AlexNet state dict"
        )
    if not os.access(weights, os.R_OK):
        raise WeightsError(f"cannot read weights file {weights}; check its permissions")


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(
        ModelSpec(
            name="alexnet",
            framework="torch",
            factory=build_model,
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            recipes={"study": STUDY_RECIPE},
            default_recipe="study",
            options=(
                Option(
                    "weights",
                    "Backbone weights: imagenet (torchvision's, downloaded once into the torch hub cache), "
                    "none (random, train from scratch) or PATH of a local AlexNet state dict.",
                    default="imagenet",
                ),
                Option(
                    "freeze",
                    "What stays frozen: study (only the last two Linear layers train, 4,205,578 parameters), "
                    "features (the whole classifier trains) or none (everything trains).",
                    default="study",
                    choices=FREEZE_CHOICES,
                ),
            ),
            description="torchvision AlexNet, classifier 9216→4096→1024→10 as in the study, 224x224 input",
            validate=validate_options,
        )
    )
