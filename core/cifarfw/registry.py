"""registry.toml: the directory of known plugins, official and third-party.

It says which plugins exist (``cifarfw plugins`` shows the missing ones with the command
that installs them), which framework each serves, and which names each owns: when two
plugins register the same name, the one listed as its owner keeps it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cifarfw.errors import UsageError


@dataclass
class RegistryEntry:
    """A plugin listed in registry.toml."""

    name: str
    distribution: str
    location: str
    framework: str
    description: str
    core: str  # compatible core versions, a PEP 440 specifier
    entry_point: str = ""
    provides: tuple[str, ...] = ()  # names it owns, "model:torch-cnn": a claimant of one of them loses it


def load_registry(path: Path | None = None) -> list[RegistryEntry]:
    """Read registry.toml (CIFARFW_REGISTRY, else the copy shipped with the core)."""
    if path is None:
        env = os.environ.get("CIFARFW_REGISTRY")
        if env:
            path = Path(env)
    try:
        if path is not None:
            text = path.read_text(encoding="utf-8")
        else:
            text = (resources.files("cifarfw") / "registry.toml").read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"cannot read the plugin registry {path or 'registry.toml'}: {err}") from err
    entries = []
    for number, item in enumerate(data.get("plugin", []), 1):
        missing = [key for key in ("name", "distribution") if not isinstance(item.get(key), str)]
        if missing:
            where = path or "registry.toml"
            raise UsageError(f"{where}: [[plugin]] number {number} lacks {' and '.join(missing)}; fix the entry")
        entries.append(
            RegistryEntry(
                name=item["name"],
                distribution=item["distribution"],
                location=item.get("location", ""),
                framework=item.get("framework", ""),
                description=item.get("description", ""),
                core=item.get("core", ""),
                entry_point=item.get("entry_point", ""),
                provides=tuple(item.get("provides", ())),
            )
        )
    return entries


def install_command(entry: RegistryEntry) -> str:
    if entry.location.startswith(("plugins/", "./")):
        return f"pip install -e {entry.location}"
    return f"pip install {entry.distribution}"


def listed_owners() -> dict[tuple[str, str], str]:
    """(kind, name) -> the plugin registry.toml lists as providing it."""
    try:
        entries = load_registry()
    except UsageError:
        return {}
    return {tuple(item.split(":", 1)): entry.name for entry in entries for item in entry.provides if ":" in item}


def frameworks() -> set[str]:
    """The frameworks registry.toml's plugins serve."""
    try:
        return {entry.framework for entry in load_registry() if entry.framework}
    except UsageError:
        return set()
