"""`cifarfw new-plugin` and `cifarfw plugins check` (issue 7).

The end-to-end flow (generate, pip install, run one epoch, run the generated tests,
uninstall) is the repository's tests/test_authoring_flow.py; here are the fast parts.
"""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

import pytest

from cifarfw.hookspecs import HOOK_API_VERSION
from cifarfw.testing import assert_one_line_error

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN_SITE = FIXTURES / "broken-site"
BROKEN_REGISTRY = FIXTURES / "registry-broken.toml"


# --- new-plugin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_new_plugin_writes_a_complete_distribution(cli, tmp_path, framework):
    code, out, err = cli("new-plugin", "my-net", "--framework", framework, "--dir", str(tmp_path / "work"))
    assert code == 0, err
    root = tmp_path / "work" / "cifarfw-my-net"
    assert f"created {root}" in out and "pip install -e" in out
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "cifarfw_my_net/__init__.py",
        "cifarfw_my_net/model.py",
        "cifarfw_my_net/plugin.py",
        "pyproject.toml",
        "tests/test_contract.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "cifarfw-my-net"
    assert project["project"]["entry-points"]["cifarfw"] == {"my-net": "cifarfw_my_net.plugin"}
    assert any(dep.startswith(f"cifarfw-{framework}") for dep in project["project"]["dependencies"])
    assert "cifarfw>=0.1,<0.2" in project["project"]["dependencies"]
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "{{" not in text, path
        ast.parse(text)  # every generated module is valid Python
    plugin = (root / "cifarfw_my_net" / "plugin.py").read_text()
    assert f'framework="{framework}"' in plugin and f"CIFARFW_HOOK_API = {HOOK_API_VERSION}" in plugin
    top_level = set()
    for node in ast.parse(plugin).body:  # module-level imports only: factories import lazily
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert top_level == {"__future__", "collections", "typing", "cifarfw"}
    assert 'plugin = "my-net"' in (root / "tests" / "test_contract.py").read_text()


def test_generated_plugin_registers_through_the_real_hooks(cli, tmp_path, monkeypatch):
    """Without installing it: put the package on sys.path and register its plugin module."""
    cli("new-plugin", "reg-check", "--dir", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "cifarfw-reg-check"))
    import cifarfw_reg_check.plugin as module

    from cifarfw.config import build
    from cifarfw.plugins import PluginHost

    host = PluginHost(load_entry_points=False)
    host.add(module, "reg-check")
    (spec,) = host.models_of("reg-check")
    assert (spec.name, spec.framework, spec.input_size) == ("reg-check", "torch", 32)
    assert set(spec.recipes) == {"default", "quick"}
    for recipe in spec.recipes:  # every recipe is a valid config layer
        config = build([("recipe", spec.recipes[recipe]), ("flags", {"model_options": {"width": "16"}})], spec)
        assert config.model_options == {"width": 16}


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Mine", "invalid plugin name 'Mine'"),
        ("my_net", "invalid plugin name 'my_net'"),
        ("9lives", "invalid plugin name"),
        ("cifarfw-mine", "without the cifarfw- prefix"),
        ("torch-cnn", "a plugin named 'torch-cnn' already exists"),
    ],
)
def test_new_plugin_rejects_bad_names_in_one_line(cli, tmp_path, name, fragment):
    code, _, err = cli("new-plugin", name, "--dir", str(tmp_path))
    assert_one_line_error(code, err, fragment)
    assert not any(p.name.startswith("cifarfw-") for p in tmp_path.iterdir())


def test_new_plugin_refuses_to_overwrite(cli, tmp_path):
    existing = tmp_path / "cifarfw-mine"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = cli("new-plugin", "mine", "--dir", str(tmp_path))
    assert_one_line_error(code, err, "already exists", "nothing was overwritten")
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_new_plugin_rejects_unknown_framework(cli, tmp_path):
    code, _, err = cli("new-plugin", "mine", "--framework", "jax", "--dir", str(tmp_path))
    assert_one_line_error(code, err, "jax")


# --- plugins check --------------------------------------------------------------------------------


@pytest.fixture
def broken_site(monkeypatch):
    """The fixture distributions of tests/fixtures/broken-site, as if pip had installed them."""
    monkeypatch.syspath_prepend(str(BROKEN_SITE))


def findings_of(out):
    return json.loads(out)


def test_plugins_check_reports_the_broken_fixture_plugins_with_fixes(cli, broken_site):
    code, out, err = cli("plugins", "check", "--registry", str(BROKEN_REGISTRY), "--json")
    assert_one_line_error(code, err, "problem(s) with installed plugins")
    assert code == 5
    problems = {}
    for f in findings_of(out):
        if f["level"] == "problem":
            problems.setdefault(f["plugin"], []).append(f)
    # An entry point naming a missing module, and a plugin requiring another cifarfw.
    broken = {f["message"]: f["fix"] for f in problems["broken-fixture"]}
    (missing,) = [m for m in broken if "No module named 'cifarfw_missing_module'" in m]
    assert "reinstall cifarfw-broken-fixture" in broken[missing]
    assert "[project.entry-points.cifarfw]" in broken[missing]
    (requires,) = [m for m in broken if "requires cifarfw<0.1" in m]
    assert "pip install -U cifarfw-broken-fixture" in broken[requires]
    # A cifarfw-* distribution without a cifarfw entry point.
    (noentry,) = problems["noentry-fixture"]
    assert "declares no 'cifarfw' entry point" in noentry["message"]
    assert 'noentry-fixture = "cifarfw_noentry_fixture.plugin"' in noentry["fix"]
    # A misspelt hook, and a registry entry for another core version.
    typo = " | ".join(f["message"] for f in problems["typo-fixture"])
    assert "register_model is marked @hookimpl but is not a cifarfw hook" in typo
    assert "did you mean 'register_models'" in typo
    assert "lists typo-fixture for cifarfw >=9, this is cifarfw 0.1.0" in typo
    notes = [f for f in findings_of(out) if f["level"] == "note" and f["plugin"] == "absent-fixture"]
    assert notes and notes[0]["fix"] == "pip install cifarfw-absent-fixture"


def test_plugins_check_text_output_says_what_to_fix(cli, broken_site):
    code, out, _ = cli("plugins", "check", "--registry", str(BROKEN_REGISTRY))
    assert code == 5
    assert "PROBLEM broken-fixture (cifarfw-broken-fixture 0.1.0)" in out
    assert "        fix: the entry point names module cifarfw_missing_module.plugin" in out


def test_plugins_check_passes_a_clean_installation(cli, installed, tmp_path):
    installed(("fake", "authoring_fakes:GOOD"))
    registry = tmp_path / "registry.toml"
    registry.write_text(
        '[[plugin]]\nname = "fake"\ndistribution = "cifarfw-fake"\nlocation = "plugins/x"\nframework = "torch"\n'
        'description = "d"\ncore = ">=0.1,<0.2"\n'
    )
    code, out, err = cli("plugins", "check", "--registry", str(registry))
    assert code == 0, out + err
    assert "ok      fake" in out and "no problems found" in out


def test_plugins_check_flags_a_framework_no_trainer_serves_with_a_did_you_mean(cli, installed):
    installed(("fake", "authoring_fakes:GOOD"), ("typo", "authoring_fakes:TYPO"))
    code, out, err = cli("plugins", "check", "--json")
    assert_one_line_error(code, err, "1 problem(s)")
    (problem,) = [f for f in json.loads(out) if f["level"] == "problem"]
    assert problem["plugin"] == "typo"
    assert problem["message"] == "model 'pytorch-net': framework 'pytorch': did you mean 'torch'?"
    assert problem["fix"] == "set framework= to one of torch in authoring_fakes"


def test_plugins_check_unreadable_registry_is_one_line(cli, tmp_path):
    bad = tmp_path / "registry.toml"
    bad.write_text("[[plugin]]\nname = \n")
    code, _, err = cli("plugins", "check", "--registry", str(bad))
    assert_one_line_error(code, err, "registry")


# --- new-plugin --kind reporter --------------------------------------------------------------------


def test_new_plugin_kind_reporter_writes_a_reporter_distribution(cli, tmp_path):
    code, out, err = cli("new-plugin", "my-log", "--kind", "reporter", "--dir", str(tmp_path))
    assert code == 0, err
    root = tmp_path / "cifarfw-my-log"
    assert f"created {root} (a reporter)" in out
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "cifarfw_my_log/__init__.py",
        "cifarfw_my_log/plugin.py",
        "pyproject.toml",
        "tests/test_contract.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == ["cifarfw>=0.1,<0.2"]  # no trainer, no framework
    assert project["project"]["entry-points"]["cifarfw"] == {"my-log": "cifarfw_my_log.plugin"}
    plugin = (root / "cifarfw_my_log" / "plugin.py").read_text()
    assert "class MyLogReporter:" in plugin and "def register_reporters(" in plugin
    for path in root.rglob("*.py"):
        assert "{{" not in path.read_text(), path


def test_generated_reporter_plugin_passes_its_own_tests(cli, tmp_path):
    """Nothing is installed: the generated tests load the plugin by its module path."""
    import subprocess
    import sys

    cli("new-plugin", "run-log", "--kind", "reporter", "--dir", str(tmp_path))
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "cifarfw-run-log", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "5 passed" in tests.stdout, tests.stdout[-2000:]


def test_new_plugin_framework_is_for_model_plugins_only(cli, tmp_path):
    code, _, err = cli("new-plugin", "my-log", "--kind", "reporter", "--framework", "keras", "--dir", str(tmp_path))
    assert_one_line_error(code, err, "--framework is for model plugins")
    assert not (tmp_path / "cifarfw-my-log").exists()
