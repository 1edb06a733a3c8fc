"""Fixtures of the authoring plugin's tests: the CLI in-process, in a clean folder, and
a chosen set of installed plugins."""

from __future__ import annotations

import importlib.metadata as md

import pytest

AUTHORING = ("authoring", "cifarfw_authoring.plugin")  # the plugin under test, always loaded


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``code, out, err = cli("new-plugin", ...)`` in this process, run in ``tmp_path``."""
    from cifarfw.testing import run_cli

    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS", "CIFARFW_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return run_cli


@pytest.fixture
def installed(monkeypatch):
    """``installed(("name", "module:object"), ...)``: these plugins (and this one) are the
    only installed entry points."""

    def install(*pairs: tuple[str, str]) -> None:
        eps = md.EntryPoints(md.EntryPoint(name, value, "cifarfw") for name, value in (AUTHORING, *pairs))
        monkeypatch.setattr("cifarfw.plugins.metadata.entry_points", lambda group=None: eps)

    return install
