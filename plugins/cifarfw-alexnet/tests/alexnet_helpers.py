"""Helpers the alexnet tests import by name (a unique module name: tests of all plugins share sys.path)."""

from __future__ import annotations

import importlib.metadata as md

import pytest


def torch_trainer_installed() -> bool:
    return any(ep.name == "torch" for ep in md.entry_points(group="cifarfw"))


requires_torch_trainer = pytest.mark.skipif(
    not torch_trainer_installed(), reason="needs the torch trainer (pip install -e plugins/cifarfw-torch)"
)
