"""Fixtures of the torch trainer's tests: tiny torch models, a plugin host, a trainer driver.

Trainings here are tiny on purpose (a few hundred synthetic images, small nets, 1-3
epochs): the whole suite shares two CPU cores with other work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cifarfw import hookimpl, runner
from cifarfw.plugins import PluginHost
from cifarfw.runs import Run
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
    """A frozen, deterministic prefix and a trainable head, offered through ``cifarfw_split``."""

    def __init__(self, num_classes: int = 10, freeze: bool = True) -> None:
        super().__init__()
        torch.manual_seed(1234)  # the same frozen prefix in every instance
        self.prefix = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(1))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(6 * 9, 32), nn.ReLU(), nn.Linear(32, num_classes))
        self.prefix.requires_grad_(not freeze)

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


class TestModels:
    """A plugin registering the test models for framework ``torch``."""

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(ModelSpec("tiny", "torch", lambda num_classes, options: TinyNet(num_classes)))
        register(
            ModelSpec(
                "split",
                "torch",
                lambda num_classes, options: SplitNet(num_classes, freeze=options.get("freeze", "yes") == "yes"),
                options=(Option("freeze", "freeze the prefix", "yes", ("yes", "no")),),
            )
        )
        register(ModelSpec("tiny64", "torch", lambda num_classes, options: TinyNet(num_classes), input_size=64))
        register(ModelSpec("nan", "torch", lambda num_classes, options: NaNNet(num_classes)))


@pytest.fixture
def host() -> PluginHost:
    import cifarfw_torch.plugin

    plugins = PluginHost(load_entry_points=False)
    plugins.add(cifarfw_torch.plugin, "torch")
    plugins.add(TestModels(), "testmodels")
    return plugins


def settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Flags for a tiny, fast run (fp32 unless a test asks otherwise)."""
    return {**TINY_DATA, "epochs": 1, "precision": "fp32", "runs_root": str(tmp_path / "runs"), **overrides}


@pytest.fixture
def train(host, tmp_path):
    """``run_dir, record = train("tiny", epochs=2, ...)`` through the core runner."""

    def run(model: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
        plugin, spec, cfg = runner.resolve(host, model, None, {}, settings(tmp_path, **overrides))
        run_dir = runner.execute(host, plugin, spec, cfg)
        return run_dir, json.loads((run_dir / "run.json").read_text())

    return run


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


@pytest.fixture
def fit(host, tmp_path):
    """Call the trainer directly on a Run this test builds, with an :class:`Events` recorder
    instead of the core's reporters: ``result, run, events = fit("tiny", resume=PATH, epochs=2)``."""
    from cifarfw_torch.trainer import TorchTrainer

    def call(model: str, resume: Path | None = None, run_dir: Path | None = None, **overrides: Any):
        plugin, spec, cfg = runner.resolve(host, model, None, {}, settings(tmp_path, **overrides))
        dataset = host.dataset(cfg.dataset).loader(cfg)
        folder = run_dir or Path(tmp_path / f"direct-{len(list(tmp_path.glob('direct-*')))}")
        folder.mkdir(parents=True, exist_ok=True)
        events = Events()
        host.pm.register(events)
        run = Run(
            id=folder.name,
            dir=folder,
            config=cfg,
            plugin=plugin,
            model=spec,
            dataset=dataset,
            trainer=host.trainer_for("torch"),
            hooks=host.pm.hook,
            resume_checkpoint=resume,
        )
        try:
            return TorchTrainer().fit(run), run, events
        finally:
            host.pm.unregister(events)

    return call
