"""The core's fake numpy plugin (tests/fakes.py: trainer "numpy", model "softmax") as an
installed plugin named "fake", so a sweep's child processes find it through its entry point.

``CIFARFW_FAKE_EPOCH_S`` makes every epoch last at least that long: runs that are still
going when a test kills a sweep or removes a Ray node.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cifarfw import hookimpl

sys.path.insert(0, os.environ.get("CIFARFW_FAKES_DIR") or str(Path(__file__).resolve().parents[4] / "tests"))
from fakes import FakeModelPlugin

_PLUGIN = FakeModelPlugin()
register_trainers = _PLUGIN.register_trainers
register_models = _PLUGIN.register_models


@hookimpl
def on_epoch_end(run, epoch, metrics):  # type: ignore[no-untyped-def]
    time.sleep(float(os.environ.get("CIFARFW_FAKE_EPOCH_S", "0") or 0))
