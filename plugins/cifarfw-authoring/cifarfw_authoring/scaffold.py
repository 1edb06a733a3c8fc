"""`cifarfw new-plugin`: a model or reporter plugin distribution, ready to install and test.

Only click is imported at module level; the work happens inside the command.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
FRAMEWORKS = ("torch", "keras")
KINDS = ("model", "reporter")
GUIDE = "docs/plugin-guide.md"


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="model",
    show_default=True,
    help="A model plugin (a model for a trainer) or a reporter plugin (receives every run's events).",
)
@click.option(
    "--framework",
    type=click.Choice(FRAMEWORKS),
    default=None,
    help="Framework of the model (its trainer plugin trains it); model plugins only.  [default: torch]",
)
@click.option(
    "--dir",
    "parent",
    default=".",
    show_default=True,
    metavar="PATH",
    help="Folder in which to create cifarfw-NAME/.",
)
def new_plugin_cmd(name: str, kind: str, framework: str | None, parent: str) -> None:
    """Create a model or reporter plugin distribution, ready to install and run.

    \b
    cifarfw new-plugin mine --framework torch
    cifarfw new-plugin my-log --kind reporter
    pip install -e cifarfw-mine
    cifarfw run --plugin mine --dataset synthetic --epochs 1
    pytest cifarfw-mine/tests
    """
    from cifarfw.errors import UsageError

    if kind == "reporter" and framework is not None:
        raise UsageError("--framework is for model plugins; a reporter plugin receives the events of every model")
    target = scaffold(name, framework or "torch", Path(parent), kind=kind)
    what = f"framework {framework or 'torch'}" if kind == "model" else "a reporter"
    click.echo(f"created {target} ({what}):")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(target)}")
    trial = f"--plugin {name}" if kind == "model" else "--plugin torch-cnn"
    click.echo(
        "next:\n"
        f"  pip install -e {target}\n"
        f"  cifarfw run {trial} --dataset synthetic --epochs 1\n"
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


def scaffold(name: str, framework: str, parent: Path, *, kind: str = "model") -> Path:
    """Write the distribution ``cifarfw-<name>`` under ``parent``; return its folder."""
    from importlib import resources

    from cifarfw import __version__
    from cifarfw.errors import UsageError
    from cifarfw.hookspecs import HOOK_API_VERSION
    from cifarfw.plugins import entry_points
    from cifarfw.registry import load_registry

    validate_name(name)
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if framework not in FRAMEWORKS:
        raise UsageError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    try:
        taken = {e.name for e in load_registry()}
    except (UsageError, KeyError):
        taken = set()
    taken |= {ep.name for ep in entry_points()}
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
    source = resources.files("cifarfw_authoring") / "templates"
    folders = ["model", framework] if kind == "model" else ["reporter"]
    files = [item for folder in folders for item in _template_files(source / folder, "")]
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
