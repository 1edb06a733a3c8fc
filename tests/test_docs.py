"""The documentation stays true: every hook documented with its arguments and tested, every
CLI option in docs/cli.md, every error class in docs/exit-codes.md, every run.json field
and config key in docs/run-folder.md, and no broken relative link or anchor."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path

import click
import pytest

from cifarfw import errors, hookspecs
from conftest import ROOT

DOCS = ROOT / "docs"
PAGES = ["user-guide.md", "cli.md", "hooks.md", "plugin-guide.md", "run-folder.md", "exit-codes.md", "architecture.md"]


def hooks() -> dict[str, list[str]]:
    """Every hook of hookspecs.py -> its argument names."""
    found = {}
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, f"{hookspecs.PROJECT}_spec"):
            found[name] = list(inspect.signature(fn).parameters)
    return found


def strip_code(text: str) -> str:
    """Markdown without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def section(text: str, heading_re: str) -> str:
    """The text under the first heading matching ``heading_re``, up to the next heading of
    the same or a higher level."""
    match = re.search(rf"^(#+)\s+{heading_re}\s*$", text, flags=re.M)
    if match is None:
        return ""
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}}\s", rest, flags=re.M)
    return rest[: end.start()] if end else rest


# --- hooks --------------------------------------------------------------------------------------


def test_the_hookspec_module_has_hooks():
    assert {"register_models", "on_epoch_end", "on_run_end"} <= set(hooks())


@pytest.mark.parametrize("hook", sorted(hooks()))
def test_every_hook_is_documented_with_each_argument(hook):
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    body = section(text, re.escape(hook))
    assert body, f"docs/hooks.md has no '### {hook}' section"
    for arg in hooks()[hook]:
        assert f"- `{arg}`" in body, f"docs/hooks.md, {hook}: argument {arg!r} is not documented as '- `{arg}`: ...'"
    assert "Called by" in body and "```python" in body, f"docs/hooks.md, {hook}: say who calls it and give an example"


@pytest.mark.parametrize("hook", sorted(hooks()))
def test_every_hook_has_a_test(hook):
    """A function ``test_hook_<name>`` in tests/ or a plugin's tests/ exercises each hook."""
    files = [*ROOT.joinpath("tests").rglob("test_*.py"), *ROOT.joinpath("plugins").glob("*/tests/**/test_*.py")]
    pattern = re.compile(rf"^\s*def test_hook_{hook}\b", re.M)
    holders = [f for f in files if f.name != "test_docs.py" and pattern.search(f.read_text(encoding="utf-8"))]
    assert holders, f"no test_hook_{hook} in tests/ or plugins/*/tests/: write one (see tests/test_docs_hooks.py)"


def test_documented_hooks_exist():
    """No section for a hook that hookspecs.py no longer has."""
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    body = section(text, "Registration hooks") + section(text, "Event hooks") + section(text, "Session hooks")
    documented = set(re.findall(r"^###\s+(\w+)\s*$", body, flags=re.M))
    assert documented == set(hooks())


# --- CLI ----------------------------------------------------------------------------------------


def core_commands(monkeypatch) -> list[tuple[str, click.Command]]:
    # The core's commands and those of the default first-party plugins; not a model's options.
    monkeypatch.setenv("CIFARFW_PLUGINS", "cifar10,authoring,compare,tensorboard")
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    from cifarfw.cli import cli

    root = click.Context(cli, info_name="cifarfw", obj={}, **cli.context_settings)
    return [("cifarfw", cli)] + [(ctx.command_path, cmd) for ctx, cmd in gen_cli.commands(cli, root)]


def test_every_option_of_every_command_is_in_cli_md(monkeypatch):
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = core_commands(monkeypatch)
    assert {"cifarfw run", "cifarfw plugins check", "cifarfw new-plugin", "cifarfw data verify"} <= {
        path for path, _ in commands
    }
    missing = []
    for path, command in commands:
        body = section(text, re.escape(f"`{path}`"))
        if not body:
            missing.append(f"section ## `{path}`")
            continue
        for param in command.params:
            names = (
                [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) else [param.human_readable_name]
            )
            missing += [
                f"{path} {name}" for name in names if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", body)
            ]
    assert not missing, f"docs/cli.md lacks {missing}; run: python docs/gen_cli.py"


# --- exit codes, run folder -----------------------------------------------------------------------


def test_every_error_class_is_in_exit_codes_md():
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.CifarfwError)]
    for cls in classes:
        if cls is errors.RunInterrupted:
            rows = ["| 130 | `RunInterrupted`", "| 143 | `RunInterrupted`"]
        else:
            rows = [f"| {cls.exit_code} | `{cls.__name__}`"]
        for row in rows:
            assert row in text, f"docs/exit-codes.md lacks the row {row!r}"


def test_run_folder_md_documents_every_run_json_field_and_config_key(clean_env, tmp_path):
    from fakes import FAKE_PLUGIN

    from cifarfw import runner
    from cifarfw.config import RunConfig
    from cifarfw.plugins import PluginHost

    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    flags = {"runs_root": str(tmp_path / "runs"), "epochs": 1, "dataset_options": {"train_size": 50, "test_size": 20}}
    run_dir = runner.execute(host, *runner.resolve(host, "fake", None, {}, flags))
    record = json.loads((run_dir / "run.json").read_text())
    text = (DOCS / "run-folder.md").read_text(encoding="utf-8")
    run_json = section(text, "run.json")
    for key in record:
        assert f"`{key}`" in run_json, f"docs/run-folder.md does not document run.json's {key!r}"
    for key in record["epochs"][0]:
        assert f"`{key}`" in section(text, "Epoch entries"), f"epoch entry key {key!r} undocumented"
    for key in record["dataset"]:
        assert f"`{key}`" in section(text, "The dataset object"), f"dataset key {key!r} undocumented"
    config_table = section(text, "The config object")
    for key in RunConfig().as_dict():
        assert f"`{key}`" in config_table, f"docs/run-folder.md does not document config key {key!r}"
    for name in (p.name for p in run_dir.iterdir()):
        documented = name if not name.startswith("events.out.tfevents") else "events.out.tfevents"
        assert documented in section(text, "Folder layout"), f"run folder file {name!r} undocumented"


# --- links --------------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_docs_pages_exist():
    for page in PAGES:
        assert (DOCS / page).is_file(), page


def test_architecture_md_lists_every_plugin_folder():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    folders = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
    assert folders and all(f"{name}/" in text for name in folders), folders


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    text = strip_code(page.read_text(encoding="utf-8"))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target} (no {resolved})")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{page.name}: broken links {broken}"


def test_slug_follows_github():
    assert slug("Settings: recipes, config files and --set") == "settings-recipes-config-files-and---set"
    assert slug("Weights (AlexNet) and offline use") == "weights-alexnet-and-offline-use"
    assert slug("`cifarfw plugins check`") == "cifarfw-plugins-check"
    assert slug("Get listed in registry.toml") == "get-listed-in-registrytoml"


# --- the plugin guide's worked example works as written ----------------------------------------------


def guide_block(heading: str, language: str) -> str:
    """The first ``language`` code block under ``### heading`` in docs/plugin-guide.md."""
    body = section((DOCS / "plugin-guide.md").read_text(encoding="utf-8"), re.escape(heading))
    match = re.search(rf"^```{language}\n(.*?)^```", body, flags=re.S | re.M)
    assert match, f"docs/plugin-guide.md: no {language} block under {heading!r}"
    return match.group(1)


def test_plugin_guide_torch_example_registers_and_builds(tmp_path, monkeypatch, clean_env):
    torch = pytest.importorskip("torch")
    import tomllib

    project = tomllib.loads(guide_block("pyproject.toml", "toml"))
    assert project["project"]["entry-points"]["cifarfw"] == {"mine": "cifarfw_mine.plugin"}
    package = tmp_path / "cifarfw_mine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(guide_block("cifarfw_mine/plugin.py", "python"))
    (package / "model.py").write_text(guide_block("cifarfw_mine/model.py", "python"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cifarfw_mine.plugin as plugin

    from cifarfw.config import build
    from cifarfw.plugins import PluginHost

    host = PluginHost(load_entry_points=False)
    host.add(plugin, "mine")
    _, spec = host.resolve_model("mine", None)
    assert host.plugins["mine"].status == "ok" and (spec.name, spec.framework) == ("mine", "torch")
    for recipe in spec.recipes:  # each recipe is a valid config layer; the option converts to int
        config = build([("recipe", spec.recipes[recipe]), ("flags", {"model_options": {"width": "16"}})], spec)
        assert config.model_options == {"width": 16}
    model = spec.factory(num_classes=10, options={"width": 16})
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)
    assert "torch" not in plugin.__dict__  # the plugin module itself imports no torch
