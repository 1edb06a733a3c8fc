"""The plugin host: loading, failure isolation, blocking, strict mode, duplicates, registry."""

from __future__ import annotations

import importlib.metadata as md
import json
import tomllib

import pytest

from cifarfw.errors import PluginError, UsageError
from cifarfw.plugins import PluginHost, load_registry
from cifarfw.testing import assert_one_line_error
from conftest import ROOT

FAKE = ("fake", "fakes:FAKE_PLUGIN")
BROKEN = ("broken", "plugins_fixture.raises_on_import")


def test_builtins_listed_without_entry_points(cli):
    code, out, _ = cli("plugins", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["builtin"]["status"] == "ok"
    assert {"dataset:cifar10", "dataset:synthetic", "reporter:tensorboard"} <= set(rows["builtin"]["registered"])


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
    assert {n: p.status for n, p in host.plugins.items() if n != "builtin"} == {"broken": "blocked", "fake": "blocked"}


def test_disable_plugin_flag_blocks(cli, entry_points):
    entry_points(FAKE)
    code, out, _ = cli("--disable-plugin", "fake", "plugins", "--json")
    assert {r["name"]: r["status"] for r in json.loads(out)}["fake"] == "blocked"
    code, _, err = cli("--disable-plugin", "fake", "run", "--plugin", "fake")
    assert_one_line_error(code, err, "blocked")


def test_duplicate_name_names_both_plugins(entry_points, clean_env):
    entry_points(("dup", "plugins_fixture.duplicate_model"), FAKE)
    host = PluginHost()
    host.collect()
    # entry points load in name order: "dup" registers softmax first, "fake" second.
    assert host.plugins["fake"].status == "failed"
    assert "'dup'" in host.plugins["fake"].error and "'fake'" in host.plugins["fake"].error
    assert host.models["softmax"].framework == "numpy"


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
        assert any(hasattr(module, hook) for hook in ("register_models", "register_trainers")), entry.name
        checked += 1
    if checked == 0:
        pytest.skip("no plugin of registry.toml is installed")


def test_packaged_registry_is_the_repository_one():
    from importlib import resources

    packaged = (resources.files("cifarfw") / "registry.toml").read_text()
    assert packaged == (ROOT / "registry.toml").read_text()
