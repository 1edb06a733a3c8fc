"""A timm model trained by the torch trainer through the contract kit; the zoo recipe shared with keras-apps."""

from __future__ import annotations

import importlib.util

import pytest

from cifarfw.plugins import PluginHost
from cifarfw.testing import PluginUnderTest, check_recipes, check_trainer_run
from cifarfw_timm import plugin


def test_the_torch_trainer_trains_one(isolated):
    """The kit's real run: the registered torch trainer, events in order, run.json, predictions."""
    spec = plugin.spec("regnetx_002")
    put = PluginUnderTest(PluginHost(), "timm", plugin, [spec])
    assert check_recipes(put, spec, {"weights": "none"}) == ["zoo"]
    record = check_trainer_run(
        put, spec, {"weights": "none"}, runs_root=isolated / "runs", train_size=20, test_size=10, batch_size=10,
        expected_total_params=2_319_482,
    )  # fmt: skip
    assert (record["model"], record["plugin"], record["recipe"]) == ("timm/regnetx_002", "timm", "zoo")


@pytest.mark.skipif(importlib.util.find_spec("cifarfw_keras_apps") is None, reason="cifarfw-keras-apps not installed")
def test_the_zoo_recipe_is_keras_apps_recipe():
    """The same values, so `cifarfw compare` flags nothing but the model between the zoos."""
    from cifarfw_keras_apps.plugin import ZOO_RECIPE

    assert plugin.ZOO_RECIPE == ZOO_RECIPE
    assert plugin.spec("resnet18").recipe(None) == ZOO_RECIPE
