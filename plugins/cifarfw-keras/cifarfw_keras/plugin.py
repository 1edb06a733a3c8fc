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


def make_trainer() -> Any:
    from cifarfw_keras.trainer import KerasTrainer

    return KerasTrainer()


def validate(config: RunConfig, model: ModelSpec) -> None:
    """Refuse settings TensorFlow cannot honour here (UsageError, before any run folder exists)."""
    from cifarfw_keras.runtime import validate_config

    validate_config(config, model)


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="keras",
            framework="keras",
            factory=make_trainer,
            validate=validate,
            description="any keras.Model (TensorFlow): tf.data batch augmentation, bf16, .keras checkpoints",
        )
    )
