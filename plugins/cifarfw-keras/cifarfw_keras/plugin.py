"""The ``keras`` plugin: registers the trainer for framework ``keras``.

This module imports no TensorFlow or Keras: the factory and the validator import them
when a run needs them (``cifarfw --help`` loads every plugin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cifarfw import hookimpl
from cifarfw.specs import TrainerSpec

if TYPE_CHECKING:
    from cifarfw.config import RunConfig
    from cifarfw.specs import ModelSpec


# The trainer's vocabulary: what --optimizer and --schedule accept for Keras models
# (cifarfw_keras.trainer implements each; config validation asks this list).
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_trainer() -> Any:
    from cifarfw_keras.trainer import KerasTrainer

    return KerasTrainer()


def validate(config: RunConfig, model: ModelSpec) -> None:
    """Refuse settings TensorFlow cannot honour here (UsageError, before any run folder exists)."""
    from cifarfw_keras.runtime import validate_config

    validate_config(config, model)


def make_adapter() -> Any:
    """The test kit's Keras adapter (cifarfw.testing's build/forward/learns checks)."""
    from cifarfw_keras.kit import KerasAdapter

    return KerasAdapter()


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="keras",
            framework="keras",
            factory=make_trainer,
            validate=validate,
            description="any keras.Model (TensorFlow): tf.data batch augmentation, bf16, .keras checkpoints",
            optimizers=OPTIMIZERS,
            schedules=SCHEDULES,
            adapter=make_adapter,
        )
    )
