"""The core's contract test kit (cifarfw.testing), run against the keras-cnn plugin."""

from __future__ import annotations

import importlib.metadata as metadata

import pytest

from cifarfw.testing import check_model_plugin

INSTALLED = {ep.name for ep in metadata.entry_points(group="cifarfw")}


@pytest.mark.skipif(
    not {"keras", "keras-cnn"} <= INSTALLED, reason="needs cifarfw-keras and cifarfw-keras-cnn installed"
)
def test_keras_cnn_meets_the_plugin_contract(tmp_path, monkeypatch):
    for var in ("CIFARFW_PLUGINS", "CIFARFW_DISABLE_PLUGINS", "CIFARFW_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    report = check_model_plugin(
        "keras-cnn",
        runs_root=tmp_path / "runs",
        expected_params={"total": 126_730, "trainable": 126_730},  # the study's Keras CNN, counted exactly
        train_size=40,
        test_size=20,
    )
    assert report.ok, str(report)
    assert {r.name for r in report.results if r.ok} == {
        "registration", "hooks", "light-import", "forward[keras-cnn]", "learns[keras-cnn]", "recipes[keras-cnn]",
        "trainer-run[keras-cnn]",
    }  # fmt: skip
