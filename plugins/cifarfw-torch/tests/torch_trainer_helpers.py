"""Models and helpers shared by the torch trainer's tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec, Option

TINY_DATA = {"dataset": "synthetic", "dataset_options": {"train_size": 256, "test_size": 128}}


class TinyNet(nn.Module):
    """conv + BN + ReLU + pool + dropout + linear: every layer kind the trainer must handle."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(self.dropout(torch.flatten(x, 1)))


class SplitNet(nn.Module):
    """A frozen, deterministic prefix and a trainable head, offered through ``cifarfw_split``.

    ``head="frozen-first"`` freezes the head's first Linear, as AlexNet's study policy does
    (the trainer then runs dropout, that layer and ReLU outside autograd); with
    ``head_dropout=0`` the whole head is deterministic."""

    def __init__(
        self, num_classes: int = 10, freeze: bool = True, head: str = "trainable", head_dropout: float = 0.2
    ) -> None:
        super().__init__()
        torch.manual_seed(1234)  # the same frozen prefix in every instance
        self.prefix = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(1))
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(6 * 9, 32), nn.ReLU(), nn.Linear(32, num_classes))
        self.prefix.requires_grad_(not freeze)
        self.head[1].requires_grad_(head == "trainable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.prefix(x))

    def cifarfw_split(self) -> tuple[nn.Module, nn.Module]:
        return self.prefix, self.head


class NaNNet(TinyNet):
    """Returns NaN logits from its ``nan_after``-th training forward pass on."""

    nan_after = 3

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.nan_after:
                return out * float("nan")
        return out


class ModelsForTests:
    """A plugin registering the test models for framework ``torch``."""

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(ModelSpec("tiny", "torch", lambda num_classes, options: TinyNet(num_classes)))
        register(
            ModelSpec(
                "split",
                "torch",
                lambda num_classes, options: SplitNet(
                    num_classes,
                    freeze=options.get("freeze", "yes") == "yes",
                    head=options.get("head", "trainable"),
                    head_dropout=options.get("head_dropout", 0.2),
                ),
                options=(
                    Option("freeze", "freeze the prefix", "yes", ("yes", "no")),
                    Option("head", "freeze the head's first Linear", "trainable", ("trainable", "frozen-first")),
                    Option("head_dropout", "the head's dropout rate", 0.2, type=float),
                ),
            )
        )
        register(ModelSpec("tiny64", "torch", lambda num_classes, options: TinyNet(num_classes), input_size=64))
        register(ModelSpec("nan", "torch", lambda num_classes, options: NaNNet(num_classes)))


def settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Flags for a tiny, fast run (fp32 unless a test asks otherwise)."""
    return {**TINY_DATA, "epochs": 1, "precision": "fp32", "runs_root": str(tmp_path / "runs"), **overrides}


class Events:
    """Records the events a trainer emits (instead of the core's reporters: no files, no plots)."""

    def __init__(self) -> None:
        self.params: dict[str, int] = {}
        self.graph: Any = None
        self.epochs: list[dict[str, float]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self.predictions: Any = None

    @hookimpl
    def on_model_built(self, params: dict[str, int], graph: Any) -> None:
        self.params, self.graph = params, graph

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append({"epoch": epoch, **metrics})

    @hookimpl
    def on_checkpoint(self, epoch: int, path: str) -> None:
        self.checkpoints.append((epoch, path))

    @hookimpl
    def on_predictions(self, labels: Any, predictions: Any, images: Any) -> None:
        self.predictions = (labels, predictions, images)
