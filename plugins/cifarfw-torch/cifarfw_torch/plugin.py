"""The ``torch`` plugin: registers the trainer for framework ``torch``.

This module imports no torch: the factory and the validator import it when a run needs them.
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
    from cifarfw_torch.trainer import TorchTrainer

    return TorchTrainer()


def validate(config: RunConfig, model: ModelSpec) -> None:
    """Refuse settings this machine or trainer cannot honour (UsageError, before any folder is written)."""
    from cifarfw_torch import distributed
    from cifarfw_torch.runtime import validate_config

    distributed.validate_config(config)
    validate_config(config, model)


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="torch",
            framework="torch",
            factory=make_trainer,
            validate=validate,
            description="any torch.nn.Module: tensor batch augmentation, bf16/AMP, checkpoints, feature cache",
        )
    )
