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


# The trainer's vocabulary: what --optimizer and --schedule accept for torch models
# (cifarfw_torch.optim implements each; config validation asks this list).
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_trainer() -> Any:
    from cifarfw_torch.trainer import TorchTrainer

    return TorchTrainer()


def validate(config: RunConfig, model: ModelSpec) -> None:
    """Refuse settings this machine or trainer cannot honour (UsageError, before any folder is written)."""
    from cifarfw_torch import distributed
    from cifarfw_torch.runtime import validate_config

    distributed.validate_config(config)
    validate_config(config, model)


def make_adapter() -> Any:
    """The test kit's torch adapter (cifarfw.testing's build/forward/learns checks)."""
    from cifarfw_torch.kit import TorchAdapter

    return TorchAdapter()


def launch(argv: list[str], nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None) -> int:
    """``--nproc-per-node``: run ``cifarfw argv`` under torchrun; its exit code."""
    from cifarfw_torch.launch import launch as torchrun

    return torchrun(argv, nproc_per_node, nnodes, rdzv_endpoint)


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="torch",
            framework="torch",
            factory=make_trainer,
            validate=validate,
            description="any torch.nn.Module: tensor batch augmentation, bf16/AMP, checkpoints, feature cache",
            optimizers=OPTIMIZERS,
            schedules=SCHEDULES,
            adapter=make_adapter,
            launch=launch,
        )
    )
