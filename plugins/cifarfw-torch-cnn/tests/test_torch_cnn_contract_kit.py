"""The core's contract test kit (cifarfw.testing), run against the torch-cnn plugin."""

from __future__ import annotations

import importlib.metadata as metadata

import pytest

from cifarfw.testing import check_model_plugin

INSTALLED = {ep.name for ep in metadata.entry_points(group="cifarfw")}


@pytest.mark.skipif(
    not {"torch", "torch-cnn"} <= INSTALLED, reason="needs cifarfw-torch and cifarfw-torch-cnn installed"
)
def test_torch_cnn_meets_the_plugin_contract(tmp_path, monkeypatch):
    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    report = check_model_plugin(
        "torch-cnn",
        runs_root=tmp_path / "runs",
        expected_params={"total": 350_366, "trainable": 350_366},  # the study's CNN, counted exactly
        train_size=40,
        test_size=20,
    )
    assert report.ok, str(report)
    assert {r.name for r in report.results if r.ok} == {
        "registration", "hooks", "light-import", "forward[torch-cnn]", "learns[torch-cnn]", "recipes[torch-cnn]",
        "trainer-run[torch-cnn]",
    }  # fmt: skip
