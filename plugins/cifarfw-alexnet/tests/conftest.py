"""Fixtures of the alexnet plugin's tests: the CLI in-process, a blocked network, the trainer check."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Runs in tmp_path, plugin and data variables cleared, torch hub cache in an empty folder."""
    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS", "CIFARFW_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cifarfw-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """No network: every connection attempt and name lookup fails at once."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cli(isolated):
    """``code, out, err = cli("run", "--plugin", "alexnet", ...)`` in this process."""
    from cifarfw.testing import run_cli

    return run_cli
