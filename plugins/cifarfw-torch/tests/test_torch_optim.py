"""Optimizers the trainer declares: each is built by cifarfw_torch.optim and trains.

``rmsprop`` is the proof that a new optimizer touches only the trainer plugin: its name in
plugin.OPTIMIZERS (the trainer's vocabulary, which config validation asks) and its
construction in optim.make_optimizer.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch_trainer_helpers import TinyNet

import cifarfw.config
from cifarfw.config import RunConfig
from cifarfw.testing import run_cli
from cifarfw_torch.optim import make_optimizer
from cifarfw_torch.plugin import OPTIMIZERS

CPU = torch.device("cpu")
# Until the core asks the trainer for its optimizers, config validation keeps its own list.
CORE_ACCEPTS_RMSPROP = "rmsprop" in getattr(cifarfw.config, "OPTIMIZERS", ("rmsprop",))
needs_core = pytest.mark.skipif(not CORE_ACCEPTS_RMSPROP, reason="the core's config still lists optimizers itself")


def test_every_declared_optimizer_is_built():
    params = list(TinyNet().parameters())
    for name in OPTIMIZERS:
        optimizer = make_optimizer(params, RunConfig(optimizer=name, lr=0.01, weight_decay=1e-4), CPU)
        assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 1e-4, name
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(params, RunConfig(optimizer="lion"), CPU)


def test_rmsprop_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = TinyNet()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    optimizer = make_optimizer(model.parameters(), RunConfig(optimizer="rmsprop", lr=0.003), CPU)
    assert isinstance(optimizer, torch.optim.RMSprop)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@needs_core
def test_a_run_with_rmsprop_trains(fit):
    _, run, events = fit("tiny", epochs=3, optimizer="rmsprop", lr=0.003, weight_decay=1e-4)
    losses = [e["train_loss"] for e in events.epochs]
    assert losses[-1] < losses[0], losses
    assert events.epochs[-1]["test_acc"] > 0.3  # chance is 0.1
    state = torch.load(run.dir / "checkpoints" / "epoch-0003.pt", weights_only=True)
    assert "square_avg" in next(iter(state["optimizer"]["state"].values()))  # RMSprop's own state


@needs_core
def test_cli_trains_torch_cnn_with_rmsprop(tmp_path):
    code, _, err = run_cli(
        "run", "--plugin", "torch-cnn", "--dataset", "synthetic", "--optimizer", "rmsprop", "--epochs", "1",
        "--lr", "0.001", "--precision", "fp32", "--batch-size", "64", "--runs-root", str(tmp_path),
        "--set", "dataset_options.train_size=256", "--set", "dataset_options.test_size=64",
        "--set", "prediction_samples=0",
    )  # fmt: skip
    if code != 0 and "torch-cnn" in err and "no plugin" in err.lower():
        pytest.skip("torch-cnn is not installed")
    assert code == 0, err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["optimizer"] == "rmsprop"
