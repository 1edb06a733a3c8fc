"""Fixtures of the timm zoo's tests: a clean environment and a blocked network."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Runs in tmp_path with cifarfw's plugin variables cleared and an empty Hugging Face cache."""
    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS", "CIFARFW_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cifarfw-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
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
