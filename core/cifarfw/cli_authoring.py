"""Commands for plugin authors: `cifarfw new-plugin` and `cifarfw plugins check`.

Only click is imported at module level; the work happens inside the commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
FRAMEWORKS = ("torch", "keras")
GUIDE = "docs/plugin-guide.md"


def add_commands(cli: click.Group, plugins_group: click.Group) -> None:
    """Attach this module's commands to the ``cifarfw`` group and its ``plugins`` group."""
    cli.add_command(new_plugin_cmd)
    plugins_group.add_command(plugins_check_cmd)


# --- cifarfw new-plugin ----------------------------------------------------------------------


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--framework",
    type=click.Choice(FRAMEWORKS),
    default="torch",
    show_default=True,
    help="Framework of the model (its trainer plugin trains it).",
)
@click.option(
    "--dir",
    "parent",
    default=".",
    show_default=True,
    metavar="PATH",
    help="Folder in which to create cifarfw-NAME/.",
)
def new_plugin_cmd(name: str, framework: str, parent: str) -> None:
    """Create a model plugin distribution, ready to install and run.

    \b
    cifarfw new-plugin mine --framework torch
    pip install -e cifarfw-mine
    cifarfw run --plugin mine --dataset synthetic --epochs 1
    pytest cifarfw-mine/tests
    """
    target = scaffold(name, framework, Path(parent))
    click.echo(f"created {target} (framework {framework}):")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(target)}")
    click.echo(
        "next:\n"
        f"  pip install -e {target}\n"
        f"  cifarfw run --plugin {name} --dataset synthetic --epochs 1\n"
        f"  python -m pytest {target / 'tests'}\n"
        f"the guide: {GUIDE}"
    )


def validate_name(name: str) -> None:
    """A plugin name is what --plugin takes: lowercase letters, digits and dashes."""
    from cifarfw.errors import UsageError

    if name.startswith("cifarfw-") or name == "cifarfw":
        raise UsageError(
            f"give the plugin name without the cifarfw- prefix (e.g. {name.removeprefix('cifarfw-') or 'mine'}); "
            "the distribution is called cifarfw-NAME"
        )
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and single dashes, starting with a letter "
            "(e.g. my-resnet)"
        )


def scaffold(name: str, framework: str, parent: Path) -> Path:
    """Write the distribution ``cifarfw-<name>`` under ``parent``; return its folder."""
    from importlib import resources

    from cifarfw import __version__
    from cifarfw.errors import UsageError
    from cifarfw.hookspecs import HOOK_API_VERSION
    from cifarfw.plugins import ENTRY_POINT_GROUP, load_registry

    validate_name(name)
    if framework not in FRAMEWORKS:
        raise UsageError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    taken = {e.name for e in _safe_registry(load_registry)}
    import importlib.metadata as metadata

    taken |= {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name in taken:
        raise UsageError(f"a plugin named {name!r} already exists (installed or in registry.toml); choose another name")
    target = parent / f"cifarfw-{name}"
    if target.exists():
        raise UsageError(f"{target} already exists; remove it or choose another --dir (nothing was overwritten)")
    major, minor = (int(p) for p in __version__.split(".")[:2])
    values = {
        "name": name,
        "dist": f"cifarfw-{name}",
        "package": "cifarfw_" + name.replace("-", "_"),
        "framework": framework,
        "title": name.replace("-", " ").title().replace(" ", ""),
        "core_spec": f">={major}.{minor},<{major}.{minor + 1}",
        "trainer_dist": f"cifarfw-{framework}",
        "hook_api": str(HOOK_API_VERSION),
    }
    source = resources.files("cifarfw") / "scaffold"
    files = _template_files(source / "common", "") + _template_files(source / framework, "")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
    except OSError as err:
        raise UsageError(f"cannot create {target}: {err.strerror or err}") from None
    for relative, text in files:
        path = target / _fill(relative, values).removesuffix(".tmpl")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_fill(text, values), encoding="utf-8")
    return target


def _template_files(folder: Any, prefix: str) -> list[tuple[str, str]]:
    """(relative path, text) of every template under ``folder`` (an importlib Traversable)."""
    out = []
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        relative = f"{prefix}{item.name}"
        if item.is_dir():
            if item.name != "__pycache__":
                out += _template_files(item, relative + "/")
        elif item.name.endswith(".tmpl"):
            out.append((relative, item.read_text(encoding="utf-8")))
    return out


def _fill(text: str, values: dict[str, str]) -> str:
    """Replace ``{{key}}`` placeholders; a leftover placeholder is a template bug."""
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise RuntimeError(f"unfilled placeholder in scaffold template: {text[text.index('{{') :][:40]}")
    return text


def _safe_registry(load: Any) -> list[Any]:
    from cifarfw.errors import UsageError

    try:
        return load()
    except (UsageError, KeyError):
        return []


# --- cifarfw plugins check --------------------------------------------------------------------


@dataclass
class Finding:
    """One line of `cifarfw plugins check`: ok, problem (exit non-zero) or note."""

    level: str  # ok | problem | note
    plugin: str
    distribution: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def check_installed(registry_path: Path | None = None) -> list[Finding]:
    """Compare installed plugins with registry.toml; every problem comes with its fix."""
    import importlib.metadata as metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.utils import canonicalize_name

    from cifarfw import __version__
    from cifarfw.errors import UsageError
    from cifarfw.plugins import ENTRY_POINT_GROUP, PluginHost, load_registry
    from cifarfw.testing import hook_problems

    findings: list[Finding] = []
    try:
        registry = load_registry(registry_path)
    except (UsageError, KeyError) as err:
        where = registry_path or "registry.toml"
        raise UsageError(f"cannot read the plugin registry {where}: {err}; fix the file (see {GUIDE})") from None
    listed = {entry.name: entry for entry in registry}
    host = PluginHost()  # loads every entry point with failure isolation
    host.collect()

    eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    owners: dict[str, list[str]] = {}
    for ep in eps:
        owners.setdefault(ep.name, []).append(ep.dist.name if ep.dist else "?")
    seen: set[str] = set()
    for ep in eps:
        if ep.name in seen:
            continue
        seen.add(ep.name)
        dist_name = ep.dist.name if ep.dist else ""
        dist_version = ep.dist.version if ep.dist else ""
        label = f"{dist_name} {dist_version}".strip()
        problems: list[tuple[str, str]] = []
        notes: list[tuple[str, str]] = []
        if len(owners[ep.name]) > 1:
            problems.append(
                (
                    f"the entry-point name {ep.name!r} is declared by {' and '.join(owners[ep.name])}; only one loads",
                    "uninstall one of them (pip uninstall DIST) or rename one entry point",
                )
            )
        info = host.plugins.get(ep.name)
        if info is not None and info.status == "failed":
            problems.append((info.error, _fix_for_failure(ep, info.error)))
        elif info is not None and info.status == "blocked":
            notes.append(("blocked by CIFARFW_PLUGINS / CIFARFW_DISABLE_PLUGINS / --disable-plugin", ""))
        if info is not None and info.status == "ok":
            try:
                module = ep.load()
            except Exception:  # already reported through the host
                module = None
            if module is not None:
                for problem in hook_problems(module):
                    problems.append((problem, f"edit {ep.value.split(':')[0]} and reinstall"))
        if ep.dist is not None:
            for requirement in ep.dist.requires or []:
                try:
                    req = Requirement(requirement)
                except InvalidRequirement:
                    continue
                if canonicalize_name(req.name) != "cifarfw" or (req.marker and "extra" in str(req.marker)):
                    continue
                if req.specifier and not req.specifier.contains(__version__, prereleases=True):
                    problems.append(
                        (
                            f"{dist_name} requires cifarfw{req.specifier}, but cifarfw {__version__} is installed",
                            f"install a {dist_name} release made for cifarfw {__version__} "
                            f"(pip install -U {dist_name}) or a matching cifarfw",
                        )
                    )
        entry = listed.get(ep.name)
        if entry is None:
            notes.append(
                (
                    "not listed in registry.toml (fine for a private plugin)",
                    f"to get it listed, see {GUIDE}#get-listed-in-registrytoml",
                )
            )
        else:
            if dist_name and canonicalize_name(entry.distribution) != canonicalize_name(dist_name):
                problems.append(
                    (
                        f"registry.toml lists {ep.name!r} as {entry.distribution}, but {dist_name} provides it",
                        f"uninstall {dist_name} or rename its entry point; the name {ep.name!r} is taken",
                    )
                )
            if entry.entry_point and ep.value != entry.entry_point:
                notes.append((f"registry.toml says entry point {entry.entry_point}, installed is {ep.value}", ""))
            try:
                compatible = SpecifierSet(entry.core).contains(__version__, prereleases=True) if entry.core else True
            except InvalidSpecifier:
                compatible = True
                problems.append((f"registry.toml has an invalid core specifier {entry.core!r}", "fix registry.toml"))
            if not compatible:
                problems.append(
                    (
                        f"registry.toml lists {ep.name} for cifarfw {entry.core}, this is cifarfw {__version__}",
                        f"install cifarfw{entry.core} or a newer {entry.distribution} listed for {__version__}",
                    )
                )
        if problems:
            findings += [Finding("problem", ep.name, label, message, fix) for message, fix in problems]
        else:
            provides = ", ".join(info.registered) if info is not None else ""
            findings.append(Finding("ok", ep.name, label, provides or "loads"))
        findings += [Finding("note", ep.name, label, message, fix) for message, fix in notes]

    # cifarfw-* distributions that cifarfw never loads.
    with_entry_points = {canonicalize_name(ep.dist.name) for ep in eps if ep.dist is not None}
    by_dist = {canonicalize_name(e.distribution): e for e in registry}
    checked: set[str] = set()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if not name.startswith("cifarfw-") or name in checked:
            continue
        checked.add(name)
        own = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if own or name in with_entry_points:
            continue
        entry = by_dist.get(name)
        example = f'{entry.name} = "{entry.entry_point}"' if entry and entry.entry_point else 'NAME = "package.plugin"'
        findings.append(
            Finding(
                "problem",
                entry.name if entry else "-",
                f"{dist.metadata['Name']} {dist.version}",
                f"{dist.metadata['Name']} is installed but declares no 'cifarfw' entry point, so cifarfw never loads it",
                f"add [project.entry-points.cifarfw] {example} to its pyproject.toml and reinstall it",
            )
        )

    installed = {f.plugin for f in findings} | with_entry_points
    for entry in registry:
        if entry.name not in installed and canonicalize_name(entry.distribution) not in installed | checked:
            from cifarfw.plugins import _install_command

            findings.append(
                Finding("note", entry.name, entry.distribution, "listed, not installed", _install_command(entry))
            )
    return findings


def _fix_for_failure(ep: Any, error: str) -> str:
    module = ep.value.split(":")[0]
    dist = ep.dist.name if ep.dist else "the plugin"
    if "ModuleNotFoundError" in error and module.split(".")[0] in error:
        return (
            f"the entry point names module {module}, which is not installed: reinstall {dist} "
            f"(pip install --force-reinstall {dist}, or pip install -e FOLDER for a checkout) or correct "
            "[project.entry-points.cifarfw] in its pyproject.toml"
        )
    if error.startswith("import failed"):
        return f"{module} raises on import: run `python -c 'import {module}'` to see the traceback, fix it, reinstall"
    if error.startswith("invalid hooks"):
        return f"a hook implementation in {module} names arguments its hook does not have (docs/hooks.md)"
    if "hook API" in error:
        return "upgrade cifarfw (pip install -U cifarfw)"
    return f"fix {module} (docs/hooks.md, docs/plugin-guide.md); `cifarfw --strict-plugins plugins` raises it"


@click.command("check")
@click.option(
    "--registry", "registry_path", metavar="FILE", help="registry.toml to compare with (default: the core's)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def plugins_check_cmd(registry_path: str | None, as_json: bool) -> None:
    """Check installed plugins against registry.toml and say what to fix.

    Reports entry points that do not import, hooks with typos or unknown arguments, plugins
    listed for other cifarfw versions, names taken twice, and cifarfw-* distributions that
    declare no `cifarfw` entry point. Exits non-zero (5) when something needs fixing.
    """
    import json

    from cifarfw.errors import PluginError

    findings = check_installed(Path(registry_path) if registry_path else None)
    problems = [f for f in findings if f.level == "problem"]
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for f in findings:
            mark = {"ok": "ok     ", "problem": "PROBLEM", "note": "note   "}[f.level]
            click.echo(f"{mark} {f.plugin} ({f.distribution or 'no distribution'}): {f.message}")
            if f.fix:
                click.echo(f"        fix: {f.fix}" if f.level == "problem" else f"        {f.fix}")
    if problems:
        raise PluginError(f"{len(problems)} problem(s) with installed plugins; the fixes are listed above")
    if not as_json:
        click.echo("no problems found")
