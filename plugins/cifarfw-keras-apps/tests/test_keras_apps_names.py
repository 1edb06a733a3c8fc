"""The shipped list of keras.applications against the installed Keras; lazy start-up."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

from cifarfw.errors import UsageError
from cifarfw.testing import check_hooks, check_import_is_light
from cifarfw_keras_apps import plugin


@pytest.fixture(scope="module")
def keras():
    from cifarfw_keras._tf import keras

    return keras


def test_the_list_is_every_constructor_of_the_installed_keras(keras):
    installed = {n for n, obj in vars(keras.applications).items() if n[:1].isupper() and inspect.isfunction(obj)}
    assert {app.constructor for app in plugin.APPS.values()} == installed


def test_each_smallest_input_is_the_one_keras_accepts(keras):
    """One side less is refused, by the shape check before any layer is built (so this is cheap)."""
    for app in plugin.APPS.values():
        constructor = getattr(keras.applications, app.constructor)
        with pytest.raises(ValueError) as refused:
            constructor(weights=None, include_top=True, classes=10, input_shape=(app.min_size - 1,) * 2 + (3,))
        match = re.search(r"at least (\d+)x\1", str(refused.value))
        assert match and int(match.group(1)) == app.min_size, (app.constructor, str(refused.value))


def test_own_preprocessing_matches_the_libraries_first_layers(keras):
    """Where the model rescales 0-255 pixels itself, its source says so (a Rescaling layer, or
    ConvNeXt's normalisation by ImageNet statistics times 255)."""
    for app in plugin.APPS.values():
        source = inspect.getsource(inspect.getmodule(getattr(keras.applications, app.constructor)))
        rescales = "layers.Rescaling" in source or "0.485 * 255" in source
        assert rescales == app.own_preprocessing, app.constructor


def test_every_name_resolves_to_a_spec():
    names = plugin.names()
    assert len(names) == len(set(names)) == len(plugin.APPS) == 40
    for name in names:
        spec = plugin.spec(name)
        assert spec.name == f"keras/{name}" and spec.framework == "keras"
        assert spec.input_size == plugin.APPS[name].min_size and spec.default_recipe == "zoo"
    assert plugin.spec("MobileNetV2").name == "keras/mobilenetv2"  # the constructor's spelling works too
    with pytest.raises(UsageError, match="did you mean 'mobilenetv2'"):
        plugin.spec("mobilenetv22")


def test_hooks_and_a_light_import():
    check_hooks(plugin)
    check_import_is_light(plugin)


def test_listing_and_looking_up_import_no_keras():
    code = (
        "import sys\n"
        "from cifarfw_keras_apps import plugin\n"
        "plugin.spec(plugin.names()[0])\n"
        "print('HEAVY', sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "HEAVY []" in out, out
