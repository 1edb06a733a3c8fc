"""`cifarfw plugins check`: installed plugins against registry.toml, each problem with its fix.

Only click is imported at module level; the work happens inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

GUIDE = "docs/plugin-guide.md"


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

    from packaging.utils import canonicalize_name

    from cifarfw.errors import UsageError
    from cifarfw.plugins import ENTRY_POINT_GROUP, PluginHost, entry_points
    from cifarfw.registry import install_command, load_registry

    try:
        registry = load_registry(registry_path)
    except (UsageError, KeyError) as err:
        where = registry_path or "registry.toml"
        raise UsageError(f"cannot read the plugin registry {where}: {err}; fix the file (see {GUIDE})") from None
    listed = {entry.name: entry for entry in registry}
    host = PluginHost()  # loads every entry point with failure isolation
    host.collect()

    eps = entry_points()
    owners: dict[str, list[str]] = {}
    for ep in eps:
        owners.setdefault(ep.name, []).append(ep.dist.name if ep.dist else "?")
    findings: list[Finding] = []
    seen: set[str] = set()
    for ep in eps:
        if ep.name in seen:
            continue
        seen.add(ep.name)
        label = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ""
        problems, notes = _problems_of(ep, host, owners[ep.name], listed.get(ep.name))
        if problems:
            findings += [Finding("problem", ep.name, label, message, fix) for message, fix in problems]
        else:
            info = host.plugins.get(ep.name)
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
        if name in with_entry_points or any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points):
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
            findings.append(
                Finding("note", entry.name, entry.distribution, "listed, not installed", install_command(entry))
            )
    return findings


def _problems_of(
    ep: Any, host: Any, owners: list[str], entry: Any
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(problems, notes) of one installed entry point, each a (message, fix) pair."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.utils import canonicalize_name

    from cifarfw import __version__
    from cifarfw_authoring.kit import hook_problems

    dist_name = ep.dist.name if ep.dist else ""
    problems: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    if len(owners) > 1:
        problems.append(
            (
                f"the entry-point name {ep.name!r} is declared by {' and '.join(owners)}; only one loads",
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
            problems += [(problem, f"edit {ep.value.split(':')[0]} and reinstall") for problem in hook_problems(module)]
        problems += _unknown_frameworks(ep, host, info.registered)
    for requirement in (ep.dist.requires or []) if ep.dist is not None else []:
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
    if entry is None:
        notes.append(
            ("not listed in registry.toml (fine for a private plugin)", f"to get it listed, see {GUIDE}#get-listed-in-registrytoml")
        )  # fmt: skip
        return problems, notes
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
    return problems, notes


def _unknown_frameworks(ep: Any, host: Any, registered: list[str]) -> list[tuple[str, str]]:
    """A model whose framework no installed trainer serves: a typo (did you mean) or a
    trainer to install."""
    from cifarfw import registry
    from cifarfw.suggest import did_you_mean

    installed = sorted(host.trainers)
    out = []
    for kind, name in (item.split(":", 1) for item in registered):
        spec = host.models.get(name) if kind == "model" else None
        if spec is None or spec.framework in host.trainers:
            continue
        if spec.framework in registry.frameworks():
            message = f"model {name!r}: framework {spec.framework!r} has no installed trainer"
            fix = f"install its trainer (pip install cifarfw-{spec.framework})"
        else:
            hint = did_you_mean(spec.framework, installed).removeprefix("; ")
            message = f"model {name!r}: framework {spec.framework!r}: {hint or 'no installed trainer serves it'}"
            fix = f"set framework= to one of {', '.join(installed) or 'none installed'} in {ep.value.split(':')[0]}"
        out.append((message, fix))
    return out


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

    Reports entry points that do not import, hooks with typos or unknown arguments, models
    whose framework no installed trainer serves, plugins listed for other cifarfw versions,
    names taken twice, and cifarfw-* distributions that declare no `cifarfw` entry point.
    Exits non-zero (5) when something needs fixing.
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
