"""A plugin for the distributed tests, loaded on every process of a run (plugin modules' own
hooks receive events on every rank; only the core's reporters are rank 0's alone).

It registers ``probe-mlp``, a model without batch norm or dropout: data-parallel training of
it computes the same steps as one process with the same global batch, up to float rounding.

``CIFARFW_TEST_DIST_DIR=DIR``: after each epoch, each process saves its trainer's model
state (parameters and buffers) as ``DIR/rank<R>-epoch<E>.npz``.
``CIFARFW_TEST_DIST_KILL=R:E``: the process of rank R SIGKILLs itself at the end of epoch E
(writing the wall-clock time of the kill to ``DIR/killed-at`` first).
Test code only: installed into a test's PYTHONPATH with a dist-info of its own, never shipped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec

KILL_RANK, _, KILL_EPOCH = os.environ.get("CIFARFW_TEST_DIST_KILL", "-1:0").partition(":")


def _trainer_model() -> Any:
    """The model of the torch trainer that emitted the current event (found on the call stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "_Fit" and hasattr(owner, "model"):
            return owner.model
        frame = frame.f_back
    raise RuntimeError("on_epoch_end was not called from the torch trainer")


def _mlp(num_classes: int, options: dict[str, Any]) -> Any:
    from torch import nn

    return nn.Sequential(nn.Flatten(1), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, num_classes))


@hookimpl
def register_models(register: Any) -> None:
    register(ModelSpec(name="probe-mlp", framework="torch", factory=_mlp, description="no batch norm, no dropout"))


@hookimpl
def on_epoch_end(run: Any, epoch: int) -> None:
    folder = os.environ.get("CIFARFW_TEST_DIST_DIR")
    if folder:
        import numpy as np

        state = {name: value.detach().cpu().numpy() for name, value in _trainer_model().state_dict().items()}
        np.savez(Path(folder) / f"rank{run.rank}-epoch{epoch}.npz", **state)
    if run.rank == int(KILL_RANK) and epoch == int(KILL_EPOCH):
        if folder:
            (Path(folder) / "killed-at").write_text(f"{time.time()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
