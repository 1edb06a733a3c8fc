"""Run configuration: precedence, --set parsing, validation, model options."""

from __future__ import annotations

import pytest
from fakes import FAKE_PLUGIN

from cifarfw import config as config_mod
from cifarfw import runner
from cifarfw.errors import UsageError
from cifarfw.plugins import PluginHost


@pytest.fixture
def host(clean_env):
    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    return host


def test_precedence_defaults_recipe_file_flags(host):
    # default batch_size 64 < recipe 50 < file 40 < flag 30; epochs only in the recipe (3)
    _, _, cfg = runner.resolve(host, "fake", None, {}, {})
    assert (cfg.batch_size, cfg.epochs, cfg.optimizer) == (50, 3, "adam")
    _, _, cfg = runner.resolve(host, "fake", None, {"batch_size": 40, "optimizer": "sgd"}, {})
    assert (cfg.batch_size, cfg.epochs, cfg.optimizer) == (40, 3, "sgd")
    _, _, cfg = runner.resolve(host, "fake", None, {"batch_size": 40, "optimizer": "sgd"}, {"batch_size": 30})
    assert (cfg.batch_size, cfg.optimizer) == (30, "sgd")


def test_nested_tables_merge_key_by_key(host):
    file_layer = {"augment": {"flip": False}}
    flags = config_mod.parse_set("augment.brightness=0.1")
    _, _, cfg = runner.resolve(host, "fake", None, file_layer, flags)
    assert (cfg.augment.flip, cfg.augment.brightness, cfg.augment.crop_padding) == (False, 0.1, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr=0.01", {"lr": 0.01}),
        ("epochs=3", {"epochs": 3}),
        ("augment.flip=false", {"augment": {"flip": False}}),
        ("optimizer=sgd", {"optimizer": "sgd"}),  # bare words are strings
        ("reporters=['record']", {"reporters": ["record"]}),
        ("model_options.width=wide", {"model_options": {"width": "wide"}}),
        ("batch-size=8", {"batch_size": 8}),
    ],
)
def test_parse_set(text, expected):
    assert config_mod.parse_set(text) == expected


@pytest.mark.parametrize("text", ["lr", "=3", "a.b.c=1", "lr 0.1", ""])
def test_parse_set_rejects_malformed(text):
    with pytest.raises(UsageError, match="--set expects KEY=VALUE"):
        config_mod.parse_set(text)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"epochs": -2}, "epochs must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"optimizer": "adagrad"}, "the numpy trainer has no optimizer 'adagrad' (it offers: adam, adamw, sgd)"),
        ({"optimizer": "adamm"}, "no optimizer 'adamm'; did you mean 'adam'"),
        ({"schedule": "linear"}, "the numpy trainer has no schedule 'linear'"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"seed": 2**40}, "seed must be an integer from 0 to 4294967295"),
        ({"seeds": 1_000_000_000}, "seeds must be an integer from 1 to 1000"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda"),
        ({"label_smoothing": 1.0}, "label_smoothing must be a number in [0, 1)"),
        ({"augment": {"flip": "yes"}}, "augment.flip must be true or false"),
        ({"augment": {"rotate": 1}}, "unknown key augment.rotate"),
        ({"epohcs": 3}, "unknown key 'epohcs'; did you mean 'epochs'"),
        ({"verify_data": 1}, "verify_data must be true or false"),
    ],
)
def test_bad_values_are_rejected_with_the_key(host, layer, message):
    with pytest.raises(UsageError) as info:
        runner.resolve(host, "fake", None, {}, layer)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_model_options_defaults_choices_and_unknown(host):
    _, _, cfg = runner.resolve(host, "fake", None, {}, {})
    assert cfg.model_options == {"width": "narrow"}
    _, _, cfg = runner.resolve(host, "fake", None, {}, {"model_options": {"width": "wide"}})
    assert cfg.model_options == {"width": "wide"}
    with pytest.raises(UsageError, match="--width must be one of narrow, wide, got 'huge'"):
        runner.resolve(host, "fake", None, {}, {"model_options": {"width": "huge"}})
    with pytest.raises(UsageError, match="has no option 'depth'"):
        runner.resolve(host, "fake", None, {}, {"model_options": {"depth": 3}})


def test_unknown_recipe_lists_known(host):
    with pytest.raises(UsageError, match="no recipe 'quik'; did you mean 'quick'"):
        runner.resolve(host, "fake", None, {}, {"recipe": "quik"})


def test_config_file_errors(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(UsageError, match="does not exist"):
        config_mod.load_file(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        config_mod.load_file(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("epochs = 0\n")
    with pytest.raises(UsageError, match=r"config file .*wrong.toml: epochs must be a positive integer"):
        config_mod.load_file(wrong)


def test_resolved_config_round_trips_through_toml(host, tmp_path):
    _, spec, cfg = runner.resolve(host, "fake", None, {}, {"lr": 0.5, "augment": {"flip": False}})
    path = tmp_path / "config.toml"
    path.write_text(config_mod.to_toml(cfg))
    layer = config_mod.load_file(path)
    rebuilt = config_mod.build([("file", layer)], spec)
    rebuilt.plugin, rebuilt.recipe = cfg.plugin, cfg.recipe
    assert rebuilt == cfg
