"""Fixtures of the torch trainer's tests: tiny torch models, a plugin host, a trainer driver.

Trainings here are tiny on purpose (a few hundred synthetic images, small nets, 1-3
epochs): the whole suite shares two CPU cores with other work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torch_trainer_helpers import Events, ModelsForTests, settings

from cifarfw import runner
from cifarfw.plugins import PluginHost
from cifarfw.runs import Run


@pytest.fixture
def host() -> PluginHost:
    import cifarfw_torch.plugin

    plugins = PluginHost(load_entry_points=False)
    plugins.add(cifarfw_torch.plugin, "torch")
    plugins.add(ModelsForTests(), "testmodels")
    return plugins


@pytest.fixture
def train(host, tmp_path):
    """``run_dir, record = train("tiny", epochs=2, ...)`` through the core runner."""

    def run(model: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
        plugin, spec, cfg = runner.resolve(host, model, None, {}, settings(tmp_path, **overrides))
        run_dir = runner.execute(host, plugin, spec, cfg)
        return run_dir, json.loads((run_dir / "run.json").read_text())

    return run


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
