"""The plugin host: finds plugins, isolates their failures, holds what they register.

Plugins come from the ``cifarfw`` entry-point group (one entry point a plugin; its name
is the plugin's name) plus the built-in plugin. A plugin that fails to import, to
register or to validate is recorded with its error and every other plugin keeps
working; strict mode re-raises instead. Tests build their own :class:`PluginHost` and
``add()`` fake plugins in-process.

Environment:
  CIFARFW_PLUGINS          comma-separated plugin names to load; set but empty = none
  CIFARFW_DISABLE_PLUGINS  comma-separated plugin names not to load
  CIFARFW_STRICT_PLUGINS   1 = a broken plugin raises instead of being recorded
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pluggy

from cifarfw import hookspecs
from cifarfw.errors import PluginError, UsageError
from cifarfw.specs import DatasetSpec, ModelSpec, ReporterSpec, TrainerSpec
from cifarfw.suggest import did_you_mean

ENTRY_POINT_GROUP = "cifarfw"
BUILTIN = "builtin"


@dataclass
class PluginInfo:
    """One plugin as ``cifarfw plugins`` shows it."""

    name: str
    status: str  # ok | failed | blocked | not-installed
    distribution: str = ""
    version: str = ""
    error: str = ""
    registered: list[str] = field(default_factory=list)  # "model:torch-cnn", ...
    install: str = ""  # the command that installs a known, not-installed plugin

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


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
            )
        )
    return entries


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


class PluginHost:
    """The pluggy plugin manager plus the registries of datasets, models, trainers, reporters."""

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        disabled: Iterable[str] = (),
        strict: bool | None = None,
        builtin: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict if strict is not None else os.environ.get("CIFARFW_STRICT_PLUGINS") == "1"
        self.disabled = set(disabled) | set(_env_list("CIFARFW_DISABLE_PLUGINS") or [])
        self.only = _env_list("CIFARFW_PLUGINS")
        self.plugins: dict[str, PluginInfo] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.models: dict[str, ModelSpec] = {}
        self.trainers: dict[str, TrainerSpec] = {}  # keyed by framework
        self.reporters: dict[str, ReporterSpec] = {}
        self._owner: dict[tuple[str, str], str] = {}
        self._model_plugin: dict[str, str] = {}
        self._collected = False
        if builtin:
            from cifarfw import builtin as builtin_plugin

            self.add(builtin_plugin, BUILTIN, distribution="cifarfw", version=_dist_version("cifarfw"))
        if load_entry_points:
            self._load_entry_points()

    # --- loading ----------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else ""
            version = ep.dist.version if ep.dist else ""
            if ep.name in self.plugins:
                continue
            if ep.name in self.disabled or (self.only is not None and ep.name not in self.only):
                self.plugins[ep.name] = PluginInfo(ep.name, "blocked", dist, version)
                continue
            try:
                module = ep.load()
            except Exception as err:  # a broken plugin must not break the others
                self._fail(ep.name, dist, version, f"import failed: {type(err).__name__}: {err}", err)
                continue
            self.add(module, ep.name, distribution=dist, version=version)

    def add(self, plugin: object, name: str, *, distribution: str = "", version: str = "") -> None:
        """Register a plugin object (a module or an instance with hook implementations)."""
        if name in self.disabled:
            self.plugins[name] = PluginInfo(name, "blocked", distribution, version)
            return
        # A plugin may declare the hook API it was written for; a newer one than ours may
        # name hooks or arguments this core never passes (docs/hooks.md#versions).
        wanted = getattr(plugin, "CIFARFW_HOOK_API", None)
        if isinstance(wanted, int) and wanted > hookspecs.HOOK_API_VERSION:
            message = (
                f"written for cifarfw hook API {wanted}, this cifarfw has hook API {hookspecs.HOOK_API_VERSION}; "
                "upgrade cifarfw"
            )
            self._fail(name, distribution, version, message, PluginError(message))
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # pluggy validates hook signatures here
            self._fail(name, distribution, version, f"invalid hooks: {err}", err)
            return
        self.plugins[name] = PluginInfo(name, "ok", distribution, version)
        self._collected = False

    def _fail(self, name: str, dist: str, version: str, message: str, err: BaseException) -> None:
        if self.strict:
            raise PluginError(f"plugin {name!r} ({dist or 'in-process'}): {message}") from err
        self.plugins[name] = PluginInfo(name, "failed", dist, version, error=message)

    # --- registration ------------------------------------------------------------------

    def collect(self) -> None:
        """Call every registration hook, plugin by plugin, so a failure stays with its plugin."""
        if self._collected:
            return
        self._collected = True
        kinds: list[tuple[str, Callable[[Any], tuple[str, dict]]]] = [
            ("register_datasets", lambda s: self._check(s, DatasetSpec, "dataset", self.datasets)),
            ("register_models", lambda s: self._check(s, ModelSpec, "model", self.models)),
            ("register_trainers", lambda s: self._check(s, TrainerSpec, "trainer", self.trainers)),
            ("register_reporters", lambda s: self._check(s, ReporterSpec, "reporter", self.reporters)),
        ]
        added: dict[str, list[tuple[str, str, dict]]] = {}  # plugin -> what it registered
        for hook_name, check in kinds:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin_name = impl.plugin_name
                info = self.plugins.get(plugin_name)
                if info is None or info.status != "ok":
                    continue
                mine = added.setdefault(plugin_name, [])

                def register(spec: Any, _check=check, _mine=mine, _plugin=plugin_name) -> None:
                    kind, key, table = _check(spec)
                    owner = self._owner.get((kind, key))
                    if owner is not None:
                        raise PluginError(
                            f"{kind} {key!r} is registered by both plugin {owner!r} and plugin {_plugin!r}"
                        )
                    table[key] = spec
                    self._owner[(kind, key)] = _plugin
                    _mine.append((kind, key, table))

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as err:
                    # Drop everything the broken plugin registered, in every hook so far.
                    for kind, key, table in mine:
                        table.pop(key, None)
                        self._owner.pop((kind, key), None)
                    mine.clear()
                    self._fail(plugin_name, info.distribution, info.version, _message(err), err)
                    self.pm.unregister(name=plugin_name)
        for plugin_name, mine in added.items():
            info = self.plugins[plugin_name]
            for kind, key, _ in mine:
                info.registered.append(f"{kind}:{key}")
                if kind == "model":
                    self._model_plugin[key] = plugin_name
        self._collected = True

    def _check(self, spec: Any, cls: type, kind: str, table: dict) -> tuple[str, str, dict]:
        if not isinstance(spec, cls):
            raise PluginError(f"register() for {kind}s expects a {cls.__name__}, got {type(spec).__name__}")
        name = spec.framework if cls is TrainerSpec else spec.name
        if not isinstance(name, str) or not name:
            raise PluginError(f"{kind} spec has an empty name")
        if cls is ModelSpec:
            _validate_model(spec)
        factory = getattr(spec, "factory", None) or getattr(spec, "loader", None)
        if not callable(factory):
            raise PluginError(f"{kind} {name!r}: factory is not callable")
        return kind, name, table

    # --- queries ------------------------------------------------------------------------

    def models_of(self, plugin: str) -> list[ModelSpec]:
        self.collect()
        return [spec for name, spec in self.models.items() if self._model_plugin.get(name) == plugin]

    def plugin_of_model(self, model: str) -> str:
        self.collect()
        return self._model_plugin[model]

    def resolve_model(self, plugin: str, model: str | None) -> tuple[str, ModelSpec]:
        """The (plugin, model spec) that ``--plugin`` and ``--model`` name."""
        self.collect()
        info = self.plugins.get(plugin)
        if info is None:
            if plugin in self.models:  # a model name is accepted where a plugin is asked for
                return self._model_plugin[plugin], self.models[plugin]
            known = [n for n, i in self.plugins.items() if i.status == "ok"]
            raise UsageError(f"unknown plugin {plugin!r}{did_you_mean(plugin, known)}; `cifarfw plugins` lists them")
        if info.status == "blocked":
            raise PluginError(f"plugin {plugin!r} is blocked (CIFARFW_PLUGINS / --disable-plugin)")
        if info.status == "failed":
            raise PluginError(f"plugin {plugin!r} failed to load: {info.error}")
        models = self.models_of(plugin)
        if not models:
            raise UsageError(f"plugin {plugin!r} registers no model; `cifarfw plugins` shows what each offers")
        if model is None:
            return plugin, models[0]
        for spec in models:
            if spec.name == model:
                return plugin, spec
        names = [m.name for m in models]
        raise UsageError(f"plugin {plugin!r} has no model {model!r}{did_you_mean(model, names)}")

    def dataset(self, name: str) -> DatasetSpec:
        self.collect()
        if name not in self.datasets:
            raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, list(self.datasets))}")
        return self.datasets[name]

    def trainer_for(self, framework: str) -> TrainerSpec:
        self.collect()
        if framework not in self.trainers:
            raise PluginError(
                f"no trainer is installed for framework {framework!r}; install cifarfw-{framework} "
                f"(see `cifarfw plugins`)"
            )
        return self.trainers[framework]

    def listing(self) -> list[PluginInfo]:
        """Every plugin: installed ones with their status, then known-but-not-installed ones."""
        self.collect()
        rows = list(self.plugins.values())
        installed = {p.name for p in rows} | {p.distribution for p in rows}
        try:
            registry = load_registry()
        except UsageError:
            registry = []
        for entry in registry:
            if entry.name not in installed and entry.distribution not in installed:
                rows.append(
                    PluginInfo(
                        entry.name,
                        "not-installed",
                        entry.distribution,
                        error="",
                        install=_install_command(entry),
                    )
                )
        return rows


def _install_command(entry: RegistryEntry) -> str:
    if entry.location.startswith(("plugins/", "./")):
        return f"pip install -e {entry.location}"
    return f"pip install {entry.distribution}"


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, PluginError) else f"{type(err).__name__}: {err}"


def _validate_model(spec: ModelSpec) -> None:
    if not isinstance(spec.framework, str) or not spec.framework:
        raise PluginError(f"model {spec.name!r}: framework must be a non-empty string")
    if not isinstance(spec.input_size, int) or spec.input_size < 8:
        raise PluginError(f"model {spec.name!r}: input_size must be an int >= 8")
    for label, stats in (("mean", spec.mean), ("std", spec.std)):
        if len(stats) != 3 or not all(isinstance(v, int | float) for v in stats):
            raise PluginError(f"model {spec.name!r}: {label} must be three numbers")
    if any(v <= 0 for v in spec.std):
        raise PluginError(f"model {spec.name!r}: std values must be positive")
    if spec.default_recipe is not None and spec.default_recipe not in spec.recipes:
        raise PluginError(f"model {spec.name!r}: default recipe {spec.default_recipe!r} is not in its recipes")
    from cifarfw.config import validate_recipe  # late: config imports specs

    for recipe_name, overrides in spec.recipes.items():
        try:
            validate_recipe(overrides)
        except UsageError as err:
            raise PluginError(f"model {spec.name!r}, recipe {recipe_name!r}: {err}") from err


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""
