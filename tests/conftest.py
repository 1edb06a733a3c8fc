"""Shared fixtures: an isolated plugin world, the CLI in-process, the study's data if present."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # tests import fakes.py and fixture plugins by name

SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR10_EP = ("cifar10", "cifarfw_cifar10.plugin")  # a default plugin: in every test's plugin world


def shared_data_dir() -> Path | None:
    """The study's CIFAR-10 copy (../shared/data or CIFARFW_DATA_DIR), or None."""
    env = os.environ.get("CIFARFW_DATA_DIR")
    for candidate in (Path(env) if env else None, SHARED_DATA):
        if candidate is not None and (candidate / "cifar-10-batches-py" / "data_batch_1").exists():
            return candidate
    return None


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed `cifarfw` entry points with the ones a test names:
    ``entry_points(("fake", "fakes:FAKE_PLUGIN"), ...)``. The CIFAR-10 dataset plugin, which
    cifarfw always installs, stays unless ``cifar10=False``."""

    def install(*pairs: tuple[str, str], cifar10: bool = True) -> None:
        pairs = (*pairs, CIFAR10_EP) if cifar10 and CIFAR10_EP[0] not in dict(pairs) else pairs
        eps = md.EntryPoints(md.EntryPoint(name, value, "cifarfw") for name, value in pairs)
        monkeypatch.setattr("cifarfw.plugins.metadata.entry_points", lambda group=None: eps)

    return install


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No plugin-selection or data variables from the caller's environment; cache in tmp."""
    for var in (
        "CIFARFW_PLUGINS",
        "CIFARFW_DISABLE_PLUGINS",
        "CIFARFW_STRICT_PLUGINS",
        "CIFARFW_DATA_DIR",
        "CIFARFW_DATA_CHECKSUMS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(clean_env):
    """Run the CLI in-process: ``code, out, err = cli("run", "--plugin", ...)``."""
    from cifarfw.testing import run_cli

    return run_cli
