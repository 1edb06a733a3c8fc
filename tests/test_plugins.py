"""The plugin host: loading, failure isolation, blocking, strict mode, duplicates, registry."""

from __future__ import annotations

import importlib.metadata as md
import json
import tomllib

import pytest

from cifarfw import hookimpl
from cifarfw.errors import PluginError, UsageError
from cifarfw.plugins import PluginHost, load_registry
from cifarfw.specs import ModelSpec
from cifarfw.testing import assert_one_line_error
from conftest import ROOT

FAKE = ("fake", "fakes:FAKE_PLUGIN")
BROKEN = ("broken", "plugins_fixture.raises_on_import")


def test_builtins_listed_without_entry_points(cli):
    code, out, _ = cli("plugins", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["builtin"]["status"] == "ok"
    assert {"dataset:synthetic", "reporter:console", "reporter:record"} <= set(rows["builtin"]["registered"])
    # CIFAR-10, TensorBoard and the comparison are first-party plugins, registered through the same hooks.
    assert rows["cifar10"]["registered"] == ["dataset:cifar10"]
    assert "reporter:tensorboard" in rows["tensorboard"]["registered"]
    assert rows["compare"]["status"] == "ok"


def test_plugin_raising_on_import_is_recorded_and_others_work(cli, entry_points, tmp_path):
    entry_points(BROKEN, FAKE)
    code, out, _ = cli("plugins", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["broken"]["status"] == "failed"
    assert "broken on purpose" in rows["broken"]["error"]
    assert rows["fake"]["status"] == "ok"
    code, out, err = cli("plugins")  # the table shows the failure too
    assert "failed" in out and "broken on purpose" in out
    code, out, err = cli("run", "--plugin", "fake", "--runs-root", str(tmp_path / "runs"), "--epochs", "1")
    assert code == 0, err
    assert "finished" in out
    code, _, err = cli("run", "--plugin", "broken")
    assert_one_line_error(code, err, "broken", "failed to load")


def test_strict_mode_reraises(entry_points, monkeypatch, clean_env):
    entry_points(BROKEN, FAKE)
    monkeypatch.setenv("CIFARFW_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken on purpose"):
        PluginHost()


def test_strict_flag_gives_one_line_error(cli, entry_points):
    entry_points(BROKEN, FAKE)
    code, _, err = cli("--strict-plugins", "plugins")
    assert_one_line_error(code, err, "broken")


def test_env_var_selects_plugins_and_empty_means_none(entry_points, monkeypatch, clean_env):
    entry_points(BROKEN, FAKE)
    monkeypatch.setenv("CIFARFW_PLUGINS", "fake")
    host = PluginHost()
    assert host.plugins["fake"].status == "ok"
    assert host.plugins["broken"].status == "blocked"
    monkeypatch.setenv("CIFARFW_PLUGINS", "")
    host = PluginHost()
    assert {n: p.status for n, p in host.plugins.items() if n != "builtin"} == {
        "broken": "blocked",
        "fake": "blocked",
        "cifar10": "blocked",
    }


def test_disable_plugin_flag_blocks(cli, entry_points):
    entry_points(FAKE)
    code, out, _ = cli("--disable-plugin", "fake", "plugins", "--json")
    assert {r["name"]: r["status"] for r in json.loads(out)}["fake"] == "blocked"
    code, _, err = cli("--disable-plugin", "fake", "run", "--plugin", "fake")
    assert_one_line_error(code, err, "blocked")


def test_duplicate_name_between_unlisted_plugins_is_refused_to_both(entry_points, clean_env):
    entry_points(("dup", "plugins_fixture.duplicate_model"), FAKE)
    host = PluginHost()
    host.collect()
    # Neither is registry.toml's owner of "softmax": load order must not decide, both lose it.
    for name in ("dup", "fake"):
        assert host.plugins[name].status == "failed"
        assert "'dup' and plugin 'fake'" in host.plugins[name].error
    assert "softmax" not in host.models


@pytest.mark.parametrize("hijacker", ["aa-dup", "zz-dup"])  # sorting before and after the owner
def test_listed_owner_keeps_its_name_whatever_the_load_order(entry_points, clean_env, hijacker):
    entry_points((hijacker, "plugins_fixture.hijack"), ("torch-cnn", "cifarfw_torch_cnn.plugin"))
    host = PluginHost()
    host.collect()
    assert host.plugins["torch-cnn"].status == "ok"
    assert host.plugin_of_model("torch-cnn") == "torch-cnn"
    error = host.plugins[hijacker].error
    assert host.plugins[hijacker].status == "failed"
    assert f"'{hijacker}'" in error and "'torch-cnn'" in error and "lists 'torch-cnn' as its owner" in error


def test_unknown_framework_suggests_the_known_ones(clean_env):
    from fakes import FakeModelPlugin

    class Pytorch:
        @staticmethod
        @hookimpl
        def register_models(register):
            register(ModelSpec("mine", "pytorch", FakeModelPlugin.register_models))

    host = PluginHost(load_entry_points=False)
    host.add(Pytorch(), "mine")
    with pytest.raises(PluginError, match=r"framework 'pytorch'; did you mean 'torch'"):
        host.trainer_for(host.resolve_model("mine", None)[1].framework)


@pytest.mark.parametrize(
    "stats", [{"mean": (125.3, 123.0, 113.9)}, {"std": (63.0, 62.1, 66.7)}, {"mean": (-0.1, 0.4, 0.4)}]
)
def test_mean_and_std_off_the_0_1_scale_are_refused(clean_env, stats):
    class Scaled:
        @staticmethod
        @hookimpl
        def register_models(register):
            register(ModelSpec("scaled", "numpy", lambda num_classes, options: None, **stats))

    host = PluginHost(load_entry_points=False)
    host.add(Scaled(), "scaled")
    host.collect()
    assert host.plugins["scaled"].status == "failed"
    assert "0-1 pixel scale" in host.plugins["scaled"].error


def test_invalid_spec_fails_its_plugin_and_rolls_back(entry_points, clean_env):
    entry_points(("bad", "plugins_fixture.bad_spec"), FAKE)
    host = PluginHost()
    host.collect()
    assert host.plugins["bad"].status == "failed"
    assert "std" in host.plugins["bad"].error
    assert "half-registered" not in host.datasets  # what it registered before failing is gone
    assert "softmax" in host.models


def test_unknown_plugin_suggests_close_matches(cli, entry_points):
    entry_points(FAKE)
    code, _, err = cli("run", "--plugin", "fak")
    assert_one_line_error(code, err, "unknown plugin 'fak'", "did you mean 'fake'")


def test_plugin_with_no_trainer_for_its_framework(clean_env):
    from fakes import FakeModelPlugin

    class ModelsOnly:
        register_models = FakeModelPlugin.register_models

    host = PluginHost(load_entry_points=False)
    host.add(ModelsOnly(), "models-only")
    with pytest.raises(PluginError, match="no trainer is installed for framework 'numpy'"):
        from cifarfw import runner

        runner.resolve(host, "models-only")


def test_unknown_model_of_plugin(clean_env):
    from fakes import FAKE_PLUGIN

    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    with pytest.raises(UsageError, match=r"no model 'softmx'.*did you mean 'softmax'"):
        host.resolve_model("fake", "softmx")
    assert host.resolve_model("softmax", None)[0] == "fake"  # a model name works as a plugin name


def test_registry_lists_every_plugin_folder():
    entries = {e.location: e for e in load_registry(ROOT / "registry.toml")}
    folders = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
    for folder in folders:
        location = f"plugins/{folder.name}"
        assert location in entries, f"{location} is not listed in registry.toml"
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        entry = entries[location]
        assert project["name"] == entry.distribution
        declared = project.get("entry-points", {}).get("cifarfw", {})
        assert declared.get(entry.name) == entry.entry_point, f"{location}: entry point differs from registry.toml"


def test_registry_entry_points_resolve_once_installed():
    installed = {ep.name: ep for ep in md.entry_points(group="cifarfw")}
    checked = 0
    for entry in load_registry(ROOT / "registry.toml"):
        if entry.name not in installed:
            continue
        ep = installed[entry.name]
        assert ep.value == entry.entry_point
        module = ep.load()
        hooks = (
            "register_models",
            "register_trainers",
            "register_reporters",
            "register_commands",
            "register_model_providers",
            "register_executors",
            "register_datasets",
        )
        assert any(hasattr(module, hook) for hook in hooks), entry.name
        checked += 1
    if checked == 0:
        pytest.skip("no plugin of registry.toml is installed")


def test_packaged_registry_is_the_repository_one():
    from importlib import resources

    packaged = (resources.files("cifarfw") / "registry.toml").read_text()
    assert packaged == (ROOT / "registry.toml").read_text()


def test_failing_model_factory_names_its_plugin_on_one_line(cli, entry_points, tmp_path):
    entry_points(FAKE, ("broken-factory", "plugins_fixture.failing_factory"))
    code, _, err = cli("run", "--plugin", "broken-factory", "--dataset", "synthetic", "--runs-root", str(tmp_path))
    line = assert_one_line_error(code, err, "model 'explodes' of plugin 'broken-factory'", "ValueError: bad width")
    assert code == 5 and "report it to its project" in line and "internal error" not in line
