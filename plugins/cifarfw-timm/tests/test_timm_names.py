"""Every timm name resolves to a spec (without building them all); the table matches timm; start-up stays lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cifarfw.errors import UsageError
from cifarfw.testing import check_hooks, check_import_is_light
from cifarfw_timm import plugin, zoo


def test_every_listed_name_resolves_to_a_spec():
    import timm

    names = plugin.names()
    skipped = zoo.unsupported()
    assert list(names) == [n for n in timm.list_models() if n not in skipped] and len(names) > 1000
    missing = [n for n in names if n not in zoo.table()]
    # A newer timm's extra names are probed when looked up; a table far behind wants regenerating.
    assert len(missing) <= 20, f"{len(missing)} names lack an entry: run python -m cifarfw_timm.probe"
    for name in names:
        spec = plugin.spec(name)
        assert spec.name == f"timm/{name}" and spec.framework == "torch" and spec.default_recipe == "zoo"
        assert 32 <= spec.input_size <= 1024, name
        assert [o.name for o in spec.options] == ["timm_args", "weights"]


def test_feature_encoders_are_left_out_with_the_reason():
    """timm's *_enc towers (vision-language encoders) ignore num_classes: no class scores to train."""
    skipped = zoo.unsupported()
    assert skipped and all(name.endswith("_enc") for name in skipped), skipped
    with pytest.raises(UsageError, match="cannot be trained as a CIFAR-10 classifier: it outputs features"):
        plugin.spec(next(iter(skipped)))


def test_the_table_names_only_timm_models_and_32_px_is_the_rule():
    names = set(plugin.names())
    assert set(zoo.table()) <= names
    at_32 = [n for n, (side, _) in zoo.table().items() if side == 32]
    assert len(at_32) > 0.9 * len(zoo.table())


def test_an_unknown_name_is_a_usage_error_with_close_matches():
    with pytest.raises(UsageError, match="did you mean 'resnet18'"):
        plugin.spec("resnet181")


def test_hooks_and_a_light_import():
    check_hooks(plugin)
    check_import_is_light(plugin)


def test_start_up_imports_neither_zoo_library():
    """`cifarfw --help`, `plugins` and `run --help` with both zoos installed: no timm, keras, torch."""
    code = (
        "import sys\n"
        "from cifarfw.cli import main\n"
        "for args in (['--help'], ['plugins'], ['run', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('timm', 'torch', 'keras', 'tensorflow') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "HEAVY []" in out, out[-2000:]
    assert "--timm-args" in out  # the provider's options show in run --help without listing the names
